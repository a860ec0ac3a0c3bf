//! A small tokio runtime owned by the adapters, so that the core's synchronous ports can call the
//! asynchronous SDK from a plain thread, from a runtime's blocking pool, or even from inside an
//! async task of another runtime (where `Runtime::block_on` would panic).

use std::future::Future;

/// The adapters' own runtime. Requests are spawned on it and waited for on a std channel.
pub(crate) struct Bridge {
    rt: Option<tokio::runtime::Runtime>,
}

impl Bridge {
    /// A runtime with two worker threads (requests are I/O-bound; two is plenty).
    pub(crate) fn new() -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("twin-aws")
            .enable_all()
            .build()?;
        Ok(Bridge { rt: Some(rt) })
    }

    /// Runs `fut` on the adapters' runtime and waits for its result on the calling thread.
    pub(crate) fn run<F>(&self, fut: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt
            .as_ref()
            .expect("the runtime lives until drop")
            .spawn(async move {
                // The receiver only goes away if the caller's thread is gone.
                let _ = tx.send(fut.await);
            });
        match rx.recv() {
            Ok(out) => out,
            // The task was dropped without sending: it panicked.
            Err(_) => panic!("an AWS request task panicked (see the message above)"),
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // Dropping a runtime normally blocks, which panics inside an async context;
        // shutting down in the background never does.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_from_a_plain_thread_and_from_inside_another_runtime() {
        let b = std::sync::Arc::new(Bridge::new().unwrap());
        assert_eq!(b.run(async { 1 + 1 }), 2);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let b2 = b.clone();
        let from_blocking = rt.block_on(async move {
            tokio::task::spawn_blocking(move || b2.run(async { 3 }))
                .await
                .unwrap()
        });
        assert_eq!(from_blocking, 3);
        let got = rt.block_on(async move {
            // Inside an async task: a nested block_on would panic, the bridge does not.
            let inner = b.run(async {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                7
            });
            // Dropping the last handle (and so the runtime) inside async code does not panic.
            drop(b);
            inner
        });
        assert_eq!(got, 7);
    }
}
