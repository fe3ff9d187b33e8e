//! [`Running`]: the method calls an execution is running, polled by the run's own task.
//!
//! What `FuturesUnordered` does for this use, without its allocation per future: a call's
//! slot (its place, and the waker that queues it) is reused by later calls, so a step costs
//! no allocation here. Calls are polled in the order they became ready (pushed, or woken),
//! as `FuturesUnordered` polls them.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures::Stream;
use futures::task::{ArcWake, AtomicWaker, waker_ref};

/// Slots ready to be polled, shared with the slots' wakers.
#[derive(Default)]
struct ReadyQueue {
    slots: Mutex<VecDeque<usize>>,
    /// The task that polls the set.
    owner: AtomicWaker,
}

impl ReadyQueue {
    fn lock(&self) -> MutexGuard<'_, VecDeque<usize>> {
        // Only pushes and pops happen under the lock; neither leaves the queue half changed.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct SlotWaker {
    slot: usize,
    /// Whether the slot is in the ready queue, so that many wakes queue it once.
    queued: AtomicBool,
    ready: Arc<ReadyQueue>,
}

impl SlotWaker {
    fn enqueue(&self) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.ready.lock().push_back(self.slot);
        }
    }
}

impl ArcWake for SlotWaker {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.enqueue();
        arc_self.ready.owner.wake();
    }
}

struct Slot<T> {
    task: Option<T>,
    waker: Arc<SlotWaker>,
}

/// A set of futures polled concurrently by one task; yields their outputs as they complete.
pub(crate) struct Running<T> {
    slots: Vec<Slot<T>>,
    free: Vec<usize>,
    ready: Arc<ReadyQueue>,
    len: usize,
}

impl<T> Default for Running<T> {
    fn default() -> Self {
        Running { slots: Vec::new(), free: Vec::new(), ready: Arc::default(), len: 0 }
    }
}

impl<T: Future + Unpin> Running<T> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn push(&mut self, task: T) {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                let slot = self.slots.len();
                let waker =
                    Arc::new(SlotWaker { slot, queued: AtomicBool::new(false), ready: Arc::clone(&self.ready) });
                self.slots.push(Slot { task: None, waker });
                slot
            }
        };
        let slot = &mut self.slots[index];
        slot.task = Some(task);
        self.len += 1;
        // A slot a stale waker already queued is polled once, for its new task.
        slot.waker.enqueue();
    }

    /// Drops the calls `cancel` picks (their futures, and with them whatever they hold);
    /// returns how many. A slot still queued by a waker is skipped when polled, as after a
    /// call that finished.
    pub(crate) fn cancel(&mut self, mut cancel: impl FnMut(&T) -> bool) -> usize {
        let mut dropped = 0;
        for (index, slot) in self.slots.iter_mut().enumerate() {
            if slot.task.as_ref().is_some_and(&mut cancel) {
                slot.task = None;
                self.free.push(index);
                self.len -= 1;
                dropped += 1;
            }
        }
        dropped
    }
}

impl<T: Future + Unpin> Stream for Running<T> {
    type Item = T::Output;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T::Output>> {
        let this = self.get_mut();
        this.ready.owner.register(cx.waker());
        // Like `FuturesUnordered`, give the runtime back its thread after polling every call
        // once without any of them finishing.
        let mut budget = this.len;
        loop {
            if this.len == 0 {
                return Poll::Ready(None);
            }
            let Some(index) = this.ready.lock().pop_front() else { return Poll::Pending };
            let Some(slot) = this.slots.get_mut(index) else { continue };
            // Cleared before the poll, so that a wake during the poll queues the slot again.
            slot.waker.queued.store(false, Ordering::Release);
            // Woken after its call finished, by a waker the call left behind.
            let Some(task) = slot.task.as_mut() else { continue };
            let waker = waker_ref(&slot.waker);
            let mut task_cx = Context::from_waker(&waker);
            match Pin::new(task).poll(&mut task_cx) {
                Poll::Ready(out) => {
                    slot.task = None;
                    this.free.push(index);
                    this.len -= 1;
                    return Poll::Ready(Some(out));
                }
                Poll::Pending => {
                    budget = budget.saturating_sub(1);
                    if budget == 0 {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{FutureExt, StreamExt};

    #[tokio::test]
    async fn yields_in_completion_order_and_reuses_slots() {
        let mut set = Running::default();
        for i in 0..3u32 {
            set.push(async move { i }.boxed());
        }
        let mut got = Vec::new();
        while let Some(v) = set.next().await {
            got.push(v);
        }
        assert_eq!(got, [0, 1, 2]);
        set.push(async move { 7 }.boxed());
        assert_eq!(set.slots.len(), 3);
        assert_eq!(set.next().await, Some(7));
        assert!(set.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_woken_call_is_polled_again() {
        use std::time::Duration;
        let mut set = Running::default();
        set.push(
            async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                "slow"
            }
            .boxed(),
        );
        set.push(
            async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                "fast"
            }
            .boxed(),
        );
        set.push(async { "now" }.boxed());
        assert_eq!(set.len(), 3);
        let mut got = Vec::new();
        while let Some(v) = set.next().await {
            got.push(v);
        }
        assert_eq!(got, ["now", "fast", "slow"]);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_calls_are_dropped_and_their_slots_reused() {
        use std::time::Duration;
        let mut set = Running::default();
        set.push(
            async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "slow"
            }
            .boxed(),
        );
        set.push(
            async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                "fast"
            }
            .boxed(),
        );
        // Polled once, so the slow call's timer holds a waker for its slot.
        assert!(futures::poll!(set.next()).is_pending());
        let mut first = true;
        assert_eq!(set.cancel(|_| std::mem::take(&mut first)), 1);
        assert_eq!(set.len(), 1);
        set.push(async { "new" }.boxed());
        let mut got = Vec::new();
        while let Some(v) = set.next().await {
            got.push(v);
        }
        assert_eq!(got, ["new", "fast"]);
        assert_eq!(set.slots.len(), 2);
    }
}
