//! A connection's future polled again at once when it wakes itself while polled.
//!
//! hyper's HTTP/1 connection wakes its own task while tokio polls it: a request body
//! is handed from the connection to the handler through a channel, and the handler's
//! first read of it wakes the connection (which is the same task) to send it; the
//! connection wakes itself again when it has. tokio treats a task woken while it runs
//! as a yield: it goes to the back of the run queue and another worker thread is
//! woken to take it. On a small machine that is a wake-up of a parked thread, and
//! often the task moving to it, twice per request with a body. Polling such a
//! future again on the spot does what the yield would have done, on this thread, and
//! wakes no one. Wakes from elsewhere (the socket, another task) pass straight on.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// Polls in a row after self-wakes before the task yields for real (so a
/// connection that always has more to do still lets other tasks run).
const MAX_REPOLLS: usize = 4;

/// Wraps `inner` (see the module's doc).
pub fn repoll_on_self_wake<F: Future>(inner: F) -> RepollOnSelfWake<F> {
    RepollOnSelfWake {
        inner: Box::pin(inner),
        waker: None,
    }
}

pub struct RepollOnSelfWake<F> {
    inner: Pin<Box<F>>,
    /// The waker handed to `inner` and what stands behind it, made at the first poll.
    waker: Option<(Waker, Arc<Relay>)>,
}

/// Holds a wake that comes while the inner future is being polled; forwards others.
/// One atomic state, so a wake racing the end of a poll is either seen by the poller
/// or forwarded, never lost.
struct Relay {
    state: AtomicU8,
    outer: Mutex<Waker>,
}

const IDLE: u8 = 0;
const POLLING: u8 = 1;
const POLLING_WOKEN: u8 = 2;

impl Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let held = self.state.compare_exchange(
            POLLING,
            POLLING_WOKEN,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        match held {
            Ok(_) | Err(POLLING_WOKEN) => {}
            Err(_) => self
                .outer
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .wake_by_ref(),
        }
    }
}

impl<F: Future> Future for RepollOnSelfWake<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let (waker, relay) = this.waker.get_or_insert_with(|| {
            let relay = Arc::new(Relay {
                state: AtomicU8::new(IDLE),
                outer: Mutex::new(cx.waker().clone()),
            });
            (Waker::from(relay.clone()), relay)
        });
        {
            let mut outer = relay.outer.lock().unwrap_or_else(PoisonError::into_inner);
            if !outer.will_wake(cx.waker()) {
                *outer = cx.waker().clone();
            }
        }
        let mut inner_cx = Context::from_waker(waker);
        for _ in 0..=MAX_REPOLLS {
            relay.state.store(POLLING, Ordering::Release);
            let polled = this.inner.as_mut().poll(&mut inner_cx);
            // From here on wakes go to the outer waker; was one held meanwhile?
            let woken = relay.state.swap(IDLE, Ordering::AcqRel) == POLLING_WOKEN;
            if polled.is_ready() || !woken {
                return polled;
            }
        }
        // Still waking itself: yield to the scheduler after all.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts the wakes it receives.
    #[derive(Default)]
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Wakes itself during its first `self_wakes` polls, then is ready.
    struct SelfWaking {
        self_wakes: usize,
        polls: usize,
    }

    impl Future for SelfWaking {
        type Output = usize;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            self.polls += 1;
            if self.polls > self.self_wakes {
                return Poll::Ready(self.polls);
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn poll_once<F: Future>(f: &mut RepollOnSelfWake<F>, outer: &Arc<Counter>) -> Poll<F::Output> {
        let waker = Waker::from(outer.clone());
        Pin::new(f).poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_self_wake_is_polled_again_at_once_and_wakes_no_one() {
        let outer = Arc::new(Counter::default());
        let mut f = repoll_on_self_wake(SelfWaking {
            self_wakes: 2,
            polls: 0,
        });
        assert_eq!(poll_once(&mut f, &outer), Poll::Ready(3));
        assert_eq!(outer.0.load(Ordering::SeqCst), 0, "the scheduler was woken");
    }

    #[test]
    fn a_future_that_keeps_waking_itself_still_yields() {
        let outer = Arc::new(Counter::default());
        let mut f = repoll_on_self_wake(SelfWaking {
            self_wakes: usize::MAX,
            polls: 0,
        });
        assert!(poll_once(&mut f, &outer).is_pending());
        assert_eq!(f.inner.polls, MAX_REPOLLS + 1);
        assert_eq!(outer.0.load(Ordering::SeqCst), 1, "a yield wakes the task");
    }

    /// Without the wrapper's relay a wake from elsewhere after the poll would be lost
    /// and the connection would hang.
    #[test]
    fn a_wake_from_elsewhere_reaches_the_task() {
        let outer = Arc::new(Counter::default());
        let slot: Arc<Mutex<Option<Waker>>> = Arc::default();
        let kept = slot.clone();
        let mut f = repoll_on_self_wake(std::future::poll_fn(move |cx| {
            *kept.lock().unwrap() = Some(cx.waker().clone());
            Poll::<()>::Pending
        }));
        assert!(poll_once(&mut f, &outer).is_pending());
        assert_eq!(outer.0.load(Ordering::SeqCst), 0);
        slot.lock().unwrap().take().unwrap().wake();
        assert_eq!(outer.0.load(Ordering::SeqCst), 1);
        // A new outer waker (the task moved) is the one woken next time.
        let moved = Arc::new(Counter::default());
        assert!(poll_once(&mut f, &moved).is_pending());
        slot.lock().unwrap().take().unwrap().wake();
        assert_eq!(moved.0.load(Ordering::SeqCst), 1);
        assert_eq!(outer.0.load(Ordering::SeqCst), 1);
    }

    /// A wake from another thread racing the end of a poll is never lost: each
    /// round hands the waker to a thread that wakes it at once, and the test waits
    /// for the task to be woken (a lost wake leaves it waiting for ever).
    #[test]
    fn a_wake_racing_the_end_of_a_poll_is_not_lost() {
        use std::sync::mpsc;
        use std::time::Duration;
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let (to_waker, wakes) = mpsc::channel::<Waker>();
        let waking = std::thread::spawn(move || {
            for w in wakes {
                w.wake();
            }
        });
        let round = Arc::new(AtomicUsize::new(0));
        let seen = round.clone();
        let mut f = repoll_on_self_wake(std::future::poll_fn(move |cx| {
            // Ready once per round after the wake; otherwise hand the waker over.
            if seen.load(Ordering::SeqCst) % 2 == 1 {
                seen.fetch_add(1, Ordering::SeqCst);
                return Poll::Ready(());
            }
            seen.fetch_add(1, Ordering::SeqCst);
            let _ = to_waker.send(cx.waker().clone());
            Poll::Pending
        }));
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        for _ in 0..20_000 {
            round.store(0, Ordering::SeqCst);
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                let mut cx = Context::from_waker(&waker);
                if Pin::new(&mut f).poll(&mut cx).is_ready() {
                    break;
                }
                // Woken (or a spurious unpark): poll again; a lost wake times out.
                std::thread::park_timeout(Duration::from_secs(5));
                assert!(std::time::Instant::now() < deadline, "a wake was lost");
            }
        }
        drop(f);
        waking.join().unwrap();
    }
}
