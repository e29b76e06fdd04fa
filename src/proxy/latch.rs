//! A one-way signal that a relay can wait on at every wake for the price of an atomic load.
//!
//! A tunnel's relay polls everything it waits on each time its task wakes, twice a round
//! trip of a busy WebSocket. A `CancellationToken`'s future takes two locks at each poll (the
//! token's state, then its list of waiters, to update the waker); a [`Latch`]'s takes none
//! once it has registered: it keeps the waker it registered with and registers again only
//! when the task's waker is another one.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// Set once, never unset; [`Latch::wait`] resolves once it is set.
#[derive(Debug, Default)]
pub struct Latch {
    set: AtomicBool,
    /// Wakes the waiters registered when it is set.
    notify: Notify,
}

impl Latch {
    /// Sets the latch and wakes everything waiting on it.
    pub fn set(&self) {
        self.set.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// Resolves once the latch is set.
    pub fn wait(&self) -> Wait<'_> {
        Wait {
            latch: self,
            notified: Box::pin(self.notify.notified()),
            registered: None,
        }
    }
}

/// The future of [`Latch::wait`].
pub struct Wait<'a> {
    latch: &'a Latch,
    /// Registered with the latch's waiters at the first poll (boxed: `Notified` must not
    /// move once polled, and a `Wait` is moved into the relay's future).
    notified: Pin<Box<Notified<'a>>>,
    /// The waker the registration wakes.
    registered: Option<Waker>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.latch.is_set() {
            return Poll::Ready(());
        }
        if self.registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return Poll::Pending;
        }
        // First poll, or a task's waker that changed: register (again). The latch is read
        // again after registering: a `set` in between has either been seen here or wakes
        // the registration.
        if self.notified.as_mut().poll(cx).is_ready() || self.latch.is_set() {
            return Poll::Ready(());
        }
        self.registered = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_wait_resolves_when_set_and_at_once_after() {
        let latch = Arc::new(Latch::default());
        let waiting = tokio::spawn({
            let latch = latch.clone();
            async move { latch.wait().await }
        });
        // Let the waiter register, then set.
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        latch.set();
        waiting.await.expect("the wait ends");
        assert!(latch.is_set());
        latch.wait().await;
    }
}
