//! The shared-memory segments of the workers on the coordinator's own host (see
//! [`ecg_shared::shm`]): offered at registration, used for a worker's chunks when its messages
//! say so, dropped when the worker is no longer a member.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use ecg_proto::v1;
use ecg_shared::shm::{Region, Segment};

use crate::core::WorkerId;

/// The segments, by worker.
pub struct Segments {
    /// `cluster.shared_memory_dir`, when there is one to use.
    dir: Option<PathBuf>,
    /// Bytes in each region: the parameter vector's.
    region: usize,
    by_worker: Mutex<HashMap<WorkerId, Arc<WorkerSegment>>>,
}

/// A worker's segment, and which of its state downloads may write to the download region.
pub struct WorkerSegment {
    /// The segment.
    pub segment: Segment,
    /// The newest download's number. A download writes its chunks only while it is the
    /// newest, under this lock: a download the worker gave up on, whose task has not noticed
    /// yet, cannot overwrite the chunks of the one that replaced it.
    writer: Mutex<u64>,
}

impl WorkerSegment {
    /// Starts a new download: the number it writes under.
    pub fn new_download(&self) -> u64 {
        let mut n = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        *n += 1;
        *n
    }

    /// Writes `data` at `offset` of the download region for download `download`; its
    /// checksum, or `None` when a newer download has begun.
    pub fn write_download(
        &self,
        download: u64,
        offset: u64,
        data: &[u8],
    ) -> Option<ecg_shared::Result<u64>> {
        let n = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        (*n == download).then(|| self.segment.write(Region::Download, offset, data))
    }
}

impl Segments {
    /// Segments in `dir` (none: no shared memory) for `n_params` parameters.
    pub fn new(dir: Option<PathBuf>, n_params: usize) -> Self {
        Segments {
            dir,
            region: n_params * 4,
            by_worker: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<WorkerId, Arc<WorkerSegment>>> {
        self.by_worker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A segment for `w`, when shared memory is on and the worker called from this host: its
    /// address is the one it reached us at (loopback, or this host's own address). `None`
    /// otherwise, and when the segment cannot be made (a full tmpfs: the worker uses gRPC).
    pub fn offer(
        &self,
        w: WorkerId,
        local: Option<SocketAddr>,
        remote: Option<SocketAddr>,
    ) -> Option<v1::SharedMemory> {
        let dir = self.dir.as_ref()?;
        let same_host = match (local, remote) {
            (Some(l), Some(r)) => r.ip().is_loopback() || l.ip() == r.ip(),
            _ => false,
        };
        if !same_host {
            return None;
        }
        match Segment::create(dir, self.region) {
            Ok((seg, nonce)) => {
                let offer = v1::SharedMemory {
                    path: seg.path().display().to_string(),
                    nonce,
                    region_bytes: self.region as u64,
                };
                self.lock().insert(
                    w,
                    Arc::new(WorkerSegment {
                        segment: seg,
                        writer: Mutex::new(0),
                    }),
                );
                Some(offer)
            }
            Err(e) => {
                tracing::warn!("{w}: no shared memory ({e}); its chunks go over gRPC");
                None
            }
        }
    }

    /// The segment of `w`, if it was offered one.
    pub fn get(&self, w: WorkerId) -> Option<Arc<WorkerSegment>> {
        self.lock().get(&w).cloned()
    }

    /// Drops the segments of workers for which `member` is false.
    pub fn retain(&self, member: impl Fn(WorkerId) -> bool) {
        self.lock().retain(|w, _| member(*w));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().expect("address"))
    }

    #[test]
    fn only_workers_on_this_host_are_offered_a_segment_and_stale_writers_are_shut_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let segs = Segments::new(Some(dir.path().to_path_buf()), 1000);
        let here = addr("10.0.0.1:50051");
        assert!(
            segs.offer(WorkerId(1), here, addr("10.0.0.2:4000"))
                .is_none(),
            "another host"
        );
        assert!(
            segs.offer(WorkerId(1), here, None).is_none(),
            "unknown peer"
        );
        let offer = segs
            .offer(WorkerId(2), here, addr("127.0.0.1:4000"))
            .expect("loopback");
        assert_eq!(offer.region_bytes, 4000);
        assert!(std::path::Path::new(&offer.path).exists());
        assert!(
            segs.offer(WorkerId(3), here, addr("10.0.0.1:4000"))
                .is_some(),
            "this host's own address"
        );
        assert!(segs.get(WorkerId(1)).is_none());

        let s = segs.get(WorkerId(2)).expect("offered");
        let old = s.new_download();
        let new = s.new_download();
        assert!(s.write_download(old, 0, &[1; 8]).is_none(), "superseded");
        assert!(s.write_download(new, 0, &[1; 8]).is_some_and(|r| r.is_ok()));

        segs.retain(|w| w != WorkerId(2));
        drop(s);
        assert!(segs.get(WorkerId(2)).is_none());
        assert!(
            !std::path::Path::new(&offer.path).exists(),
            "a dropped worker's segment is removed"
        );
        let off = Segments::new(None, 1000);
        assert!(off.offer(WorkerId(4), here, addr("127.0.0.1:1")).is_none());
    }
}
