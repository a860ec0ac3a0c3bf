//! The queue port over one SQS queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{MessageSystemAttributeName, SendMessageBatchRequestEntry};
use twin_core::queue::{Queue, QueueError, Received};

use crate::bridge::Bridge;

/// SQS's longest long-poll wait.
const MAX_WAIT: Duration = Duration::from_secs(20);
/// SQS's largest receive and send batch.
const MAX_BATCH: usize = 10;
/// SQS's longest visibility timeout: receipts older than this can no longer be used.
const RECEIPT_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

/// One SQS queue. Receipts are small numbers mapped to SQS receipt handles inside this value,
/// so a message must be acknowledged through the `SqsQueue` that received it.
pub struct SqsQueue {
    bridge: Arc<Bridge>,
    client: aws_sdk_sqs::Client,
    url: String,
    receipts: Mutex<HashMap<u64, (String, Instant)>>,
    next_receipt: AtomicU64,
}

fn queue_error(what: &str, e: impl std::error::Error) -> QueueError {
    QueueError(format!("{what}: {}", DisplayErrorContext(e)))
}

impl SqsQueue {
    pub(crate) fn new(bridge: Arc<Bridge>, client: aws_sdk_sqs::Client, url: &str) -> Self {
        SqsQueue {
            bridge,
            client,
            url: url.to_string(),
            receipts: Mutex::new(HashMap::new()),
            next_receipt: AtomicU64::new(1),
        }
    }

    /// The queue URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends many messages, ten per request; fails naming how many SQS refused.
    pub fn send_batch(&self, bodies: &[String]) -> Result<(), QueueError> {
        for chunk in bodies.chunks(MAX_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .build()
                        .map_err(|e| QueueError(format!("batch entry: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let req = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries));
            let out = self
                .bridge
                .run(async move { req.send().await })
                .map_err(|e| queue_error("send_message_batch", e))?;
            if !out.failed().is_empty() {
                let first = &out.failed()[0];
                return Err(QueueError(format!(
                    "SQS refused {} of {} messages (first: {} {})",
                    out.failed().len(),
                    chunk.len(),
                    first.code(),
                    first.message().unwrap_or_default()
                )));
            }
        }
        Ok(())
    }
}

impl Queue for SqsQueue {
    fn send(&self, body: &str) -> Result<(), QueueError> {
        let req = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body);
        self.bridge
            .run(async move { req.send().await })
            .map_err(|e| queue_error("send_message", e))?;
        Ok(())
    }

    fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let wait = wait.min(MAX_WAIT);
        // Whole seconds, rounded up so a short wait still waits.
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let req = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.min(MAX_BATCH) as i32)
            .wait_time_seconds(secs as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount);
        let out = self
            .bridge
            .run(async move { req.send().await })
            .map_err(|e| queue_error("receive_message", e))?;
        let now = Instant::now();
        let mut receipts = twin_core::sync::lock(&self.receipts);
        receipts.retain(|_, (_, at)| now.duration_since(*at) < RECEIPT_LIFETIME);
        let mut got = Vec::new();
        for m in out.messages() {
            let Some(handle) = m.receipt_handle() else {
                continue;
            };
            let deliveries = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            let receipt = self.next_receipt.fetch_add(1, Ordering::Relaxed);
            receipts.insert(receipt, (handle.to_string(), now));
            got.push(Received {
                receipt,
                body: m.body().unwrap_or_default().to_string(),
                deliveries,
            });
        }
        Ok(got)
    }

    fn ack(&self, receipt: u64) -> Result<(), QueueError> {
        let handle = twin_core::sync::lock(&self.receipts)
            .remove(&receipt)
            .map(|(h, _)| h)
            .ok_or_else(|| {
                QueueError(format!(
                    "receipt {receipt} is unknown to this queue (already acknowledged?)"
                ))
            })?;
        let req = self
            .client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(handle);
        self.bridge
            .run(async move { req.send().await })
            .map_err(|e| queue_error("delete_message", e))?;
        Ok(())
    }
}
