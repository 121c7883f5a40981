//! The streamed reduction of one step. Uploads arrive chunk by chunk; as soon as chunk `j` has
//! arrived from uploads that together hold every unit of the step, it can be summed (in unit
//! order, so the sum does not depend on arrival order) and put through Adam, and the new
//! parameters' chunk `j` can go out to the workers while later chunks are still arriving.
//!
//! Nothing here changes the run's state: the reduced chunks are a tentative next state. An
//! upload withdrawn after some chunks were reduced with it (its worker failed, fell silent or
//! was refused) voids them: the generation changes and reduction starts again from chunk 0 with
//! the uploads that remain, once the withdrawn units are delivered by another worker. The step
//! commits only when every unit is done and every chunk is reduced in the current generation.
use std::collections::BTreeMap;
use std::sync::Arc;

pub mod chunk;

use bytes::Bytes;
use ecg_shared::shm::Segment;

use crate::core::WorkerId;
use crate::snapshot::ParamChunk;

/// One chunk of an upload's gradient (little-endian f32).
#[derive(Clone)]
pub enum Piece {
    /// Received in its message.
    Bytes(Bytes),
    /// In the worker's upload segment: `len` bytes at `offset`, whose checksum was `sum` when
    /// they arrived (and were checked). The reduction reads them from there, taking the
    /// checksum again.
    Shared {
        /// The worker's segment.
        segment: Arc<Segment>,
        /// Byte offset in its upload region.
        offset: u64,
        /// Bytes.
        len: usize,
        /// Their checksum.
        sum: u64,
    },
}

impl Piece {
    /// Its length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Piece::Bytes(b) => b.len(),
            Piece::Shared { len, .. } => *len,
        }
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for Piece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Piece::Bytes(b) => write!(f, "Bytes({})", b.len()),
            Piece::Shared { offset, len, .. } => write!(f, "Shared({len} at {offset})"),
        }
    }
}

/// One upload of the step.
#[derive(Debug)]
struct Upload {
    serial: u64,
    worker: WorkerId,
    units: usize,
    chunks: Vec<Piece>,
    accepted: bool,
}

/// A chunk ready to reduce: its index and the uploads' pieces of it, in unit order.
#[derive(Debug, Clone)]
pub struct Job {
    /// The generation it belongs to.
    pub generation: u64,
    /// Chunk index.
    pub index: usize,
    /// Index of its first value.
    pub at: usize,
    /// The uploads' pieces of it, in the order of their first unit, each with that unit (the
    /// upload's key).
    pub parts: Vec<(u32, Piece)>,
}

/// The step's uploads and the chunks reduced from them.
#[derive(Debug)]
pub struct Reduction {
    n_values: usize,
    chunk_values: usize,
    n_units: usize,
    uploads: BTreeMap<u32, Upload>,
    generation: u64,
    reduced: Vec<ParamChunk>,
    serials: u64,
}

impl Reduction {
    /// The reduction of a step of `n_units` units over gradients of `n_values` values cut into
    /// chunks of `chunk_bytes` bytes.
    pub fn new(n_values: usize, chunk_bytes: usize, n_units: usize) -> Self {
        Reduction {
            n_values,
            chunk_values: (chunk_bytes / 4).max(1),
            n_units,
            uploads: BTreeMap::new(),
            generation: 0,
            reduced: Vec::new(),
            serials: 0,
        }
    }

    /// Number of chunks of a gradient.
    pub fn n_chunks(&self) -> usize {
        self.n_values.div_ceil(self.chunk_values)
    }

    /// The current generation (it changes when reduced chunks are voided).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Starts the upload of `worker` for `units` units, the first of which is `first`, in place
    /// of any earlier one for them; returns its serial number, which names it from then on.
    pub fn begin(&mut self, first: u32, worker: WorkerId, units: usize) -> u64 {
        if self.uploads.remove(&first).is_some() {
            self.void();
        }
        self.serials += 1;
        self.uploads.insert(
            first,
            Upload {
                serial: self.serials,
                worker,
                units,
                chunks: Vec::with_capacity(self.n_chunks()),
                accepted: false,
            },
        );
        self.serials
    }

    /// Adds the next chunk of the upload `first` numbered `serial`: it must start at the next
    /// chunk boundary and be a whole chunk (the last one may be shorter). `Ok(false)` when the
    /// upload is no longer part of the step (its worker was dropped from it).
    pub fn push(
        &mut self,
        first: u32,
        serial: u64,
        offset: u64,
        data: Piece,
    ) -> Result<bool, String> {
        let chunk_values = self.chunk_values;
        let n_values = self.n_values;
        let n_chunks = self.n_chunks();
        let Some(u) = self.uploads.get_mut(&first).filter(|u| u.serial == serial) else {
            return Ok(false);
        };
        let j = u.chunks.len();
        if j >= n_chunks {
            return Err(format!(
                "a chunk at byte {offset} after all {n_chunks} chunks of {n_values} values"
            ));
        }
        let at = j * chunk_values;
        let want = chunk_values.min(n_values - at);
        if offset != (at * 4) as u64 || data.len() != want * 4 {
            return Err(format!(
                "a chunk of {} bytes at byte {offset}: the next one is {} bytes at byte {} \
                 (chunks of {} bytes, {} values in all)",
                data.len(),
                want * 4,
                at * 4,
                chunk_values * 4,
                n_values
            ));
        }
        u.chunks.push(data);
        Ok(true)
    }

    /// How many chunks of the upload `first` numbered `serial` have arrived (`None`: it is no
    /// longer part of the step).
    pub fn received(&self, first: u32, serial: u64) -> Option<usize> {
        self.uploads
            .get(&first)
            .filter(|u| u.serial == serial)
            .map(|u| u.chunks.len())
    }

    /// How many chunks the upload `first` numbered `serial` has received beyond the upload
    /// still in progress that has received fewest (0 for that one; 0 when it is no longer part
    /// of the step).
    pub fn lead(&self, first: u32, serial: u64) -> usize {
        let Some(mine) = self.received(first, serial) else {
            return 0;
        };
        let n = self.n_chunks();
        let slowest = self
            .uploads
            .values()
            .map(|u| u.chunks.len())
            .filter(|&c| c < n)
            .min()
            .unwrap_or(mine);
        mine.saturating_sub(slowest)
    }

    /// Marks the upload `first` accepted: it stays when its worker leaves.
    pub fn accept(&mut self, first: u32) {
        if let Some(u) = self.uploads.get_mut(&first) {
            u.accepted = true;
        }
    }

    /// Withdraws the upload `first` numbered `serial`, unless it was accepted.
    pub fn withdraw(&mut self, first: u32, serial: u64) {
        let gone = self
            .uploads
            .get(&first)
            .is_some_and(|u| u.serial == serial && !u.accepted);
        if gone {
            self.uploads.remove(&first);
            self.void();
        }
    }

    /// Removes the upload `first`, accepted or not (its data cannot be trusted); its worker.
    pub fn remove(&mut self, first: u32) -> Option<WorkerId> {
        let gone = self.uploads.remove(&first)?;
        self.void();
        Some(gone.worker)
    }

    /// Withdraws every upload of `worker` not yet accepted.
    pub fn withdraw_worker(&mut self, worker: WorkerId) {
        let before = self.uploads.len();
        self.uploads.retain(|_, u| u.worker != worker || u.accepted);
        if self.uploads.len() != before {
            self.void();
        }
    }

    fn void(&mut self) {
        if !self.reduced.is_empty() {
            self.reduced.clear();
            self.generation += 1;
        }
    }

    /// The next chunk to reduce, when the uploads that have it hold every unit.
    pub fn job(&self) -> Option<Job> {
        self.job_at(self.reduced.len())
    }

    /// The next chunks to reduce, up to `max` of them in a row, each once the uploads that have
    /// it hold every unit.
    pub fn jobs(&self, max: usize) -> Vec<Job> {
        let first = self.reduced.len();
        (first..first + max)
            .map_while(|index| self.job_at(index))
            .collect()
    }

    fn job_at(&self, index: usize) -> Option<Job> {
        if index >= self.n_chunks() {
            return None;
        }
        let have: Vec<(u32, &Upload)> = self
            .uploads
            .iter()
            .filter(|(_, u)| u.chunks.len() > index)
            .map(|(&k, u)| (k, u))
            .collect();
        let units: usize = have.iter().map(|(_, u)| u.units).sum();
        (units == self.n_units).then(|| Job {
            generation: self.generation,
            index,
            at: index * self.chunk_values,
            parts: have
                .iter()
                .map(|(k, u)| (*k, u.chunks[index].clone()))
                .collect(),
        })
    }

    /// Records the new parameters of chunk `index` reduced in `generation`; false (and
    /// nothing recorded) when that generation is void or the chunk is not the next one.
    pub fn publish(&mut self, generation: u64, index: usize, chunk: ParamChunk) -> bool {
        if generation != self.generation || index != self.reduced.len() {
            return false;
        }
        self.reduced.push(chunk);
        true
    }

    /// Whether every chunk is reduced.
    pub fn done(&self) -> bool {
        self.reduced.len() == self.n_chunks()
    }

    /// The chunks reduced so far in the current generation, from chunk `from` on.
    pub fn reduced_from(&self, from: usize) -> &[ParamChunk] {
        self.reduced.get(from..).unwrap_or_default()
    }

    /// The reduced chunks (all of them once [`Reduction::done`]), taken.
    pub fn take_reduced(&mut self) -> Vec<ParamChunk> {
        std::mem::take(&mut self.reduced)
    }

    /// The byte offset of chunk `index`.
    pub fn offset(&self, index: usize) -> u64 {
        (index * self.chunk_values * 4) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(values: &[f32]) -> Bytes {
        Bytes::from(
            values
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        )
    }

    fn chunk(values: &[f32]) -> Piece {
        Piece::Bytes(bytes(values))
    }

    fn reduced(values: &[f32]) -> ParamChunk {
        ParamChunk {
            len: values.len() * 4,
            data: Some(bytes(values)),
            shared_sum: None,
        }
    }

    #[test]
    fn a_chunk_is_ready_when_the_uploads_holding_it_cover_every_unit() {
        // 10 values in chunks of 4: 4, 4, 2. Three units: A holds 0 and 1, B holds 2.
        let mut r = Reduction::new(10, 16, 3);
        assert_eq!(r.n_chunks(), 3);
        let (a, b) = (WorkerId(1), WorkerId(2));
        let sb = r.begin(2, b, 1);
        let sa = r.begin(0, a, 2);
        assert!(r.job().is_none());
        assert!(r.push(0, sa, 0, chunk(&[1.0; 4])).unwrap());
        assert!(r.job().is_none(), "unit 2 has not arrived");
        assert_eq!(
            (r.lead(0, sa), r.lead(2, sb)),
            (1, 0),
            "A is a chunk ahead of B"
        );
        assert!(r.push(2, sb, 0, chunk(&[2.0; 4])).unwrap());
        assert_eq!((r.lead(0, sa), r.lead(2, sb)), (0, 0));
        assert_eq!(r.jobs(2).len(), 1, "chunk 1 has not arrived");
        let job = r.job().expect("chunk 0 ready");
        assert_eq!((job.index, job.at, job.parts.len()), (0, 0, 2));
        // In unit order, whatever the arrival order, each with its upload's first unit.
        assert_eq!(job.parts[0].0, 0);
        assert_eq!(job.parts[1].0, 2);
        assert!(matches!(&job.parts[0].1, Piece::Bytes(b) if *b == bytes(&[1.0; 4])));
        assert!(r.publish(job.generation, 0, reduced(&[3.0; 4])));
        assert!(
            !r.publish(job.generation, 0, reduced(&[3.0; 4])),
            "not twice"
        );
        assert!(r.job().is_none());

        // A misplaced or wrongly sized chunk is refused, naming what was expected.
        let e = r.push(0, sa, 32, chunk(&[1.0; 2])).unwrap_err();
        assert!(e.contains("16 bytes at byte 16"), "{e}");
        assert!(r.push(0, sa, 16, chunk(&[1.0; 3])).is_err());
        // Another upload cannot add to A's.
        assert!(!r.push(0, sb, 16, chunk(&[1.0; 4])).unwrap());

        // B fails: what was reduced with it is void; A's upload stays.
        let g = r.generation();
        r.withdraw(2, sb);
        assert_ne!(r.generation(), g);
        assert!(r.reduced_from(0).is_empty());
        assert!(!r.publish(g, 0, reduced(&[3.0; 4])), "a void generation");
        // Another worker delivers unit 2 again; reduction starts over from chunk 0.
        let c = WorkerId(3);
        let sc = r.begin(2, c, 1);
        for (i, n) in [(0u64, 4usize), (16, 4), (32, 2)] {
            r.push(2, sc, i, chunk(&vec![5.0; n])).unwrap();
        }
        assert_eq!(r.received(2, sc), Some(3));
        assert_eq!(r.received(2, sb), None);
        assert_eq!(
            r.lead(0, sa),
            0,
            "a complete upload (C's) holds nobody back"
        );
        assert_eq!(r.lead(2, sb), 0, "no longer part of the step");
        r.accept(2);
        r.withdraw_worker(c);
        r.withdraw(2, sc);
        assert_eq!(r.received(2, sc), Some(3), "an accepted upload stays");
        assert_eq!(r.job().map(|j| j.index), Some(0));
        for (i, n) in [(16u64, 4usize), (32, 2)] {
            r.push(0, sa, i, chunk(&vec![1.0; n])).unwrap();
        }
        let e = r.push(0, sa, 40, chunk(&[1.0])).unwrap_err();
        assert!(e.contains("all 3 chunks"), "{e}");
        let jobs = r.jobs(5);
        assert_eq!(jobs.iter().map(|j| j.index).collect::<Vec<_>>(), [0, 1, 2]);
        for (i, job) in jobs.iter().enumerate() {
            assert!(r.publish(job.generation, i, reduced(&[0.0])));
        }
        assert!(r.done());
        assert_eq!(r.offset(2), 32);
        assert_eq!(r.reduced_from(1).len(), 2);
        // An upload whose data cannot be trusted is removed, accepted or not: what was
        // reduced with it is void.
        let g = r.generation();
        assert_eq!(r.remove(2), Some(c));
        assert_ne!(r.generation(), g);
        assert!(!r.done());
        assert_eq!(r.remove(2), None);
        assert!(r.take_reduced().is_empty());
    }
}
