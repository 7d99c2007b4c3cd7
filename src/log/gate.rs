//! The commit gate: at most one commit of this process in flight on the stream, and a
//! lone event (a plain fenced publish, ~0.4 ms) goes before waiting batches.
//!
//! Why: nats-server 2.15 commits the atomic batches of one stream one after another,
//! each costing ~4.5 ms plus ~20 µs per event on the 2-core machine (docs/BENCH.md). With
//! every partition writer free to send, a lone command waited behind one 1,000-event
//! batch per busy partition (p99 81 ms under half load). Through the gate it waits for
//! at most the commit in flight, plus its own. Throughput does not suffer: the server
//! serialises the commits anyway, and while one partition commits the others gather
//! larger batches.
//!
//! Starvation is bounded: a waiting batch is overtaken by lone events at most
//! `OVERTAKES_MAX` times, then it goes next.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// How often lone events may go before the oldest waiting batch.
pub const OVERTAKES_MAX: u32 = 8;

#[derive(Clone, Default)]
pub struct CommitGate {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    busy: bool,
    /// Lone events, in arrival order.
    lone: VecDeque<oneshot::Sender<Permit>>,
    /// Batches, in arrival order, with how often each was overtaken.
    batches: VecDeque<(oneshot::Sender<Permit>, u32)>,
}

/// The right to commit; the next waiter goes when it is dropped.
pub struct Permit {
    gate: CommitGate,
    /// False for a permit that was never handed over (its waiter had gone): dropping
    /// it must not release the gate a second time.
    armed: bool,
}

impl CommitGate {
    /// Waits for the right to commit `events` events (1 = a lone plain publish).
    pub async fn enter(&self, events: usize) -> Permit {
        let wait = {
            let mut state = self.state.lock().expect("gate lock poisoned");
            if !state.busy {
                state.busy = true;
                return Permit {
                    gate: self.clone(),
                    armed: true,
                };
            }
            let (tx, rx) = oneshot::channel();
            if events <= 1 {
                state.lone.push_back(tx);
            } else {
                state.batches.push_back((tx, 0));
            }
            rx
        };
        // The sender is only dropped after handing over a permit or when the gate is
        // dropped with waiters, which cannot happen while `self` is alive.
        wait.await
            .expect("the gate hands over before it is dropped")
    }

    /// Hands the gate to the next waiter (a lone event first, unless the oldest batch
    /// has been overtaken often enough), or frees it.
    fn release(&self) {
        let mut state = self.state.lock().expect("gate lock poisoned");
        loop {
            let batch_due = state
                .batches
                .front()
                .is_some_and(|(_, overtaken)| *overtaken >= OVERTAKES_MAX);
            let next = if !batch_due && let Some(tx) = state.lone.pop_front() {
                if let Some((_, overtaken)) = state.batches.front_mut() {
                    *overtaken += 1;
                }
                tx
            } else if let Some((tx, _)) = state.batches.pop_front() {
                tx
            } else {
                state.busy = false;
                return;
            };
            // A waiter that gave up (its future dropped) is skipped; the permit it did
            // not take is disarmed, since the gate is still ours to hand over.
            match next.send(Permit {
                gate: self.clone(),
                armed: true,
            }) {
                Ok(()) => return,
                Err(mut unused) => unused.armed = false,
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.armed {
            self.gate.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Enters the gate in a task that reports its label once it holds the permit,
    /// then holds it until told to go.
    fn waiter(
        gate: &CommitGate,
        events: usize,
        label: &'static str,
        order: tokio::sync::mpsc::UnboundedSender<&'static str>,
    ) -> (tokio::task::JoinHandle<()>, oneshot::Sender<()>) {
        let (go, hold) = oneshot::channel::<()>();
        let gate = gate.clone();
        let task = tokio::spawn(async move {
            let _permit = gate.enter(events).await;
            order.send(label).unwrap();
            let _ = hold.await;
        });
        (task, go)
    }

    /// Lets spawned tasks run until they wait (current-thread runtime: deterministic).
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_lone_event_goes_before_waiting_batches() {
        let gate = CommitGate::default();
        let (tx, mut order) = tokio::sync::mpsc::unbounded_channel();
        let (first, go_first) = waiter(&gate, 1000, "batch-in-flight", tx.clone());
        settle().await;
        let (a, go_a) = waiter(&gate, 500, "batch-waiting", tx.clone());
        settle().await;
        let (b, go_b) = waiter(&gate, 1, "lone", tx.clone());
        settle().await;
        assert_eq!(order.recv().await, Some("batch-in-flight"));
        assert!(order.try_recv().is_err(), "one commit in flight at a time");
        go_first.send(()).unwrap();
        first.await.unwrap();
        assert_eq!(order.recv().await, Some("lone"));
        go_b.send(()).unwrap();
        b.await.unwrap();
        assert_eq!(order.recv().await, Some("batch-waiting"));
        go_a.send(()).unwrap();
        a.await.unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiting_batch_is_overtaken_a_bounded_number_of_times() {
        let gate = CommitGate::default();
        let (tx, mut order) = tokio::sync::mpsc::unbounded_channel();
        let holder = gate.enter(1).await;
        let (batch, go_batch) = waiter(&gate, 1000, "batch", tx.clone());
        settle().await;
        let mut lones = Vec::new();
        for _ in 0..=OVERTAKES_MAX {
            lones.push(waiter(&gate, 1, "lone", tx.clone()));
        }
        settle().await;
        drop(holder);
        let mut seen = Vec::new();
        for (task, go) in lones.drain(..OVERTAKES_MAX as usize) {
            seen.push(order.recv().await.unwrap());
            go.send(()).unwrap();
            task.await.unwrap();
        }
        assert!(seen.iter().all(|l| *l == "lone"), "{seen:?}");
        // The next lone event is still waiting, but the batch has waited long enough.
        assert_eq!(order.recv().await, Some("batch"));
        go_batch.send(()).unwrap();
        batch.await.unwrap();
        assert_eq!(order.recv().await, Some("lone"));
        for (task, go) in lones {
            go.send(()).unwrap();
            task.await.unwrap();
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiter_that_gave_up_is_skipped() {
        let gate = CommitGate::default();
        let holder = gate.enter(1000).await;
        let gone = {
            let gate = gate.clone();
            tokio::spawn(async move {
                let _permit = gate.enter(1).await;
            })
        };
        settle().await;
        gone.abort();
        let _ = gone.await;
        drop(holder);
        // Free again: entering does not wait.
        let again = tokio::time::timeout(std::time::Duration::from_secs(5), gate.enter(1000));
        assert!(
            again.await.is_ok(),
            "the gate was freed past the waiter that left"
        );
    }
}
