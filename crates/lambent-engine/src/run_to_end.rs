//! A future that runs to its end even when whoever awaits it goes away.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Polled in place while awaited; dropped before its end (an HTTP client
/// disconnected, and hyper dropped its handler's future), it hands the rest of the
/// work to a task of its own. Cheaper than a task per call: only an abandoned call
/// pays for one.
pub(crate) struct RunToEnd<T: Send + 'static> {
    work: Option<Pin<Box<dyn Future<Output = T> + Send>>>,
}

impl<T: Send + 'static> RunToEnd<T> {
    pub(crate) fn new(work: impl Future<Output = T> + Send + 'static) -> Self {
        Self {
            work: Some(Box::pin(work)),
        }
    }
}

impl<T: Send + 'static> Future for RunToEnd<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        // `Unpin`: the work is pinned in its box, not in `self`.
        let Some(work) = self.work.as_mut() else {
            return Poll::Pending; // polled after its end: never again ready
        };
        let done = work.as_mut().poll(cx);
        if done.is_ready() {
            self.work = None;
        }
        done
    }
}

impl<T: Send + 'static> Drop for RunToEnd<T> {
    fn drop(&mut self) {
        if let Some(work) = self.work.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = work.await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::sync::Notify;

    #[tokio::test]
    async fn dropped_before_its_end_it_still_finishes() {
        let gate = Arc::new(Notify::new());
        let done = Arc::new(AtomicBool::new(false));
        let finished = Arc::new(Notify::new());
        let run = {
            let (gate, done, finished) = (gate.clone(), done.clone(), finished.clone());
            RunToEnd::new(async move {
                gate.notified().await;
                done.store(true, Ordering::SeqCst);
                finished.notify_one();
            })
        };
        // Polled once (it waits at the gate), then abandoned.
        tokio::select! {
            biased;
            _ = run => unreachable!("the gate is closed"),
            _ = tokio::task::yield_now() => {}
        }
        assert!(!done.load(Ordering::SeqCst));
        gate.notify_one();
        finished.notified().await;
        assert!(done.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn awaited_it_gives_the_work_s_output() {
        assert_eq!(RunToEnd::new(async { 7 }).await, 7);
    }
}
