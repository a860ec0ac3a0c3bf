//! What the SQS-triggered functions answer: a partial batch response that names only the
//! messages to retry (the event source mapping has `ReportBatchItemFailures`), so one bad
//! message neither blocks nor repeats the others.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsMessage};

/// The answer for `records` given each one's result, in order: every failed message is named
/// (and logged with its error) so SQS redelivers it alone, then dead-letters it after the
/// queue's `maxReceiveCount`.
pub fn sqs_batch_response<E: std::fmt::Display>(
    records: &[SqsMessage],
    results: impl IntoIterator<Item = Result<(), E>>,
) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for (record, result) in records.iter().zip(results) {
        if let Err(e) = result {
            let id = record.message_id.clone().unwrap_or_default();
            tracing::error!(message_id = %id, error = %e, "message not done; SQS will retry it");
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            response.batch_item_failures.push(f);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failed_messages_are_named() {
        let records: Vec<SqsMessage> = ["a", "b", "c"]
            .iter()
            .map(|id| {
                let mut m = SqsMessage::default();
                m.message_id = Some(id.to_string());
                m
            })
            .collect();
        let r = sqs_batch_response(&records, [Ok(()), Err("bad"), Ok(())]);
        let ids: Vec<&str> = r
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(ids, ["b"]);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["batchItemFailures"][0]["itemIdentifier"], "b");
    }
}
