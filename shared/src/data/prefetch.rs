//! Reads batches ahead of the consumer on a few threads and hands them over **in order**.
//!
//! [`Prefetcher`] is an iterator of `Result<Batch>`. At most `depth` batches are claimed by the
//! reading threads but not yet taken by the consumer, so memory stays bounded whatever the speed
//! of either side. A read that fails (or panics) is yielded as an `Err` at its place in the
//! sequence, after which the iterator ends. Dropping the iterator tells the threads to stop
//! and joins them: a thread finishes at most the one batch it is reading.
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::reader::{Batch, BatchReader};
use crate::{Error, Result};

/// State shared by the consumer and the reading threads.
struct Shared {
    state: Mutex<State>,
    /// Signalled when a reading thread may claim more work (a batch was taken, or stop).
    more_room: Condvar,
    /// Signalled when a batch is ready (or a thread exits).
    ready: Condvar,
}

struct State {
    /// Positions of each batch; taken by the thread that reads it.
    batches: Vec<Option<Vec<usize>>>,
    /// Next batch to hand to a reading thread.
    next_claim: usize,
    /// Next batch the consumer will take.
    next_yield: usize,
    /// Batches read and not yet taken, by sequence number.
    done: BTreeMap<usize, Result<Batch>>,
    /// Output buffers given back through [`Prefetcher::recycle`].
    pool: Vec<Vec<f32>>,
    /// Set on drop and after an error: threads exit.
    stop: bool,
    /// Threads still running.
    running: usize,
}

/// An in-order, bounded, multi-threaded iterator over batches of a [`BatchReader`].
pub struct Prefetcher {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    depth: usize,
    total: usize,
    /// Set once the sequence has ended (all yielded, or an error yielded).
    finished: bool,
    /// An error met while starting, yielded first.
    start_error: Option<Error>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Prefetcher {
    /// Starts `threads` threads (at least 1) reading `batches` (lists of index positions) with at
    /// most `depth` (at least 1) batches read ahead.
    pub fn new(
        reader: Arc<BatchReader>,
        batches: Vec<Vec<usize>>,
        depth: usize,
        threads: usize,
    ) -> Self {
        let total = batches.len();
        let depth = depth.max(1);
        let n_threads = threads.max(1).min(total.max(1));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                batches: batches.into_iter().map(Some).collect(),
                next_claim: 0,
                next_yield: 0,
                done: BTreeMap::new(),
                pool: Vec::new(),
                stop: false,
                running: 0,
            }),
            more_room: Condvar::new(),
            ready: Condvar::new(),
        });
        let mut this = Prefetcher {
            shared,
            threads: Vec::new(),
            depth,
            total,
            finished: total == 0,
            start_error: None,
        };
        if total == 0 {
            return this;
        }
        for i in 0..n_threads {
            let shared = Arc::clone(&this.shared);
            let reader = Arc::clone(&reader);
            lock(&this.shared.state).running += 1;
            let spawned = std::thread::Builder::new()
                .name(format!("ecg-prefetch-{i}"))
                .spawn(move || read_loop(&shared, &reader, depth));
            match spawned {
                Ok(h) => this.threads.push(h),
                Err(e) => {
                    lock(&this.shared.state).running -= 1;
                    if this.threads.is_empty() {
                        this.start_error = Some(Error::Dataset(format!(
                            "cannot start a reading thread: {e}"
                        )));
                    }
                    break;
                }
            }
        }
        this
    }

    /// Number of batches not yet yielded.
    pub fn remaining(&self) -> usize {
        if self.finished {
            0
        } else {
            self.total - lock(&self.shared.state).next_yield
        }
    }

    /// Gives a batch's buffer back so that a later batch reuses its allocation.
    pub fn recycle(&self, batch: Batch) {
        self.recycler().recycle(batch);
    }

    /// A handle that gives buffers back, usable while the prefetcher is being iterated.
    pub fn recycler(&self) -> Recycler {
        Recycler {
            shared: Arc::clone(&self.shared),
            keep: self.depth,
        }
    }

    fn stop(&self) {
        lock(&self.shared.state).stop = true;
        self.shared.more_room.notify_all();
        self.shared.ready.notify_all();
    }
}

/// Gives batch buffers back to a [`Prefetcher`] (see [`Prefetcher::recycler`]).
#[derive(Clone)]
pub struct Recycler {
    shared: Arc<Shared>,
    keep: usize,
}

impl Recycler {
    /// Keeps `batch`'s buffer (up to `depth` of them) for a later batch.
    pub fn recycle(&self, batch: Batch) {
        let mut st = lock(&self.shared.state);
        if st.pool.len() < self.keep {
            st.pool.push(batch.data);
        }
    }
}

/// One reading thread: claim the next batch while fewer than `depth` are ahead, read it, file it.
fn read_loop(shared: &Shared, reader: &BatchReader, depth: usize) {
    loop {
        let (k, positions, buf) = {
            let mut st = lock(&shared.state);
            loop {
                if st.stop || st.next_claim >= st.batches.len() {
                    st.running -= 1;
                    shared.ready.notify_all();
                    return;
                }
                if st.next_claim < st.next_yield + depth {
                    break;
                }
                st = shared.more_room.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            let k = st.next_claim;
            st.next_claim += 1;
            let positions = st.batches[k].take().unwrap_or_default();
            let buf = st.pool.pop().unwrap_or_default();
            (k, positions, buf)
        };
        let result = catch_unwind(AssertUnwindSafe(|| reader.read_reusing(positions, buf)))
            .unwrap_or_else(|_| Err(Error::Dataset(format!("reading batch {k} panicked"))));
        let mut st = lock(&shared.state);
        if st.stop {
            st.running -= 1;
            shared.ready.notify_all();
            return;
        }
        st.done.insert(k, result);
        shared.ready.notify_all();
    }
}

impl Iterator for Prefetcher {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if let Some(e) = self.start_error.take() {
            self.finished = true;
            return Some(Err(e));
        }
        if self.finished {
            return None;
        }
        let mut st = lock(&self.shared.state);
        let k = st.next_yield;
        let item = loop {
            if let Some(r) = st.done.remove(&k) {
                break r;
            }
            if st.running == 0 {
                // Cannot happen while batches remain unless threads were stopped; never wait
                // on nobody.
                break Err(Error::Dataset(format!(
                    "batch {k} was never read: the reading threads exited"
                )));
            }
            st = self
                .shared
                .ready
                .wait(st)
                .unwrap_or_else(|p| p.into_inner());
        };
        st.next_yield = k + 1;
        let last = st.next_yield >= self.total;
        drop(st);
        self.shared.more_room.notify_all();
        if item.is_err() || last {
            self.finished = true;
            self.stop();
        }
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining()))
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.stop();
        for h in self.threads.drain(..) {
            // A reading thread never panics (reads are caught); nothing to report if one did.
            let _ = h.join();
        }
    }
}
