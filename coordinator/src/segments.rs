//! Shared memory with the workers on the coordinator's own host (see [`ecg_shared::shm`]): each
//! such worker's upload segment, offered at registration and dropped when the worker is no
//! longer a member, and the one parameter segment that every such worker reads, whose two
//! regions hold the state versions of the two parities.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use ecg_proto::v1;
use ecg_shared::shm::{F32Regions, Segment};

use crate::core::WorkerId;

/// Regions of the parameter segment: one per parity of the state version.
pub const PARAMETER_REGIONS: usize = 2;

/// The region of the parameter segment that holds state version `version`.
pub fn parameter_region(version: u64) -> usize {
    (version % PARAMETER_REGIONS as u64) as usize
}

/// The segments.
pub struct Segments {
    /// `cluster.shared_memory_dir`, when there is one to use.
    dir: Option<PathBuf>,
    /// Bytes in each region: the parameter vector's.
    region: usize,
    /// Each worker's upload segment (one region).
    by_worker: Mutex<HashMap<WorkerId, Arc<Segment>>>,
    /// The parameter segment and its nonce.
    parameters: Option<(Arc<Segment>, u64)>,
}

impl Segments {
    /// Segments in `dir` (none: no shared memory) for `n_params` parameters. Without a
    /// parameter segment (it cannot be made there) no worker is offered shared memory.
    pub fn new(dir: Option<PathBuf>, n_params: usize) -> Self {
        let region = n_params * 4;
        let parameters = dir.as_ref().and_then(|d| {
            Segment::create_unnamed(d, region, PARAMETER_REGIONS)
                .inspect_err(|e| {
                    tracing::warn!("no shared memory ({e}): every chunk goes over gRPC");
                })
                .ok()
                .map(|(seg, nonce)| (Arc::new(seg), nonce))
        });
        Segments {
            dir: parameters.as_ref().and(dir),
            region,
            by_worker: Mutex::new(HashMap::new()),
            parameters,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<WorkerId, Arc<Segment>>> {
        self.by_worker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Shared memory for `w`, when it is on and the worker called from this host: its address
    /// is the one it reached us at (loopback, or this host's own address). Its upload segment
    /// and the path of the parameter segment; `None` otherwise, and when they cannot be made (a
    /// full tmpfs: the worker uses gRPC).
    pub fn offer(
        &self,
        w: WorkerId,
        local: Option<SocketAddr>,
        remote: Option<SocketAddr>,
    ) -> Option<(v1::SharedMemory, v1::SharedMemory)> {
        let dir = self.dir.as_ref()?;
        let (parameters, parameters_nonce) = self.parameters.as_ref()?;
        let same_host = match (local, remote) {
            (Some(l), Some(r)) => r.ip().is_loopback() || l.ip() == r.ip(),
            _ => false,
        };
        if !same_host {
            return None;
        }
        let made = Segment::create(dir, self.region, 1)
            .and_then(|(seg, nonce)| Ok((seg, nonce, parameters.proc_path()?)));
        match made {
            Ok((seg, nonce, params_path)) => {
                let offer = |path: &std::path::Path, nonce: u64, regions: usize| v1::SharedMemory {
                    path: path.display().to_string(),
                    nonce,
                    region_bytes: self.region as u64,
                    regions: regions as u32,
                };
                let upload = offer(seg.path(), nonce, 1);
                let params = offer(&params_path, *parameters_nonce, PARAMETER_REGIONS);
                self.lock().insert(w, Arc::new(seg));
                Some((upload, params))
            }
            Err(e) => {
                tracing::warn!("{w}: no shared memory ({e}); its chunks go over gRPC");
                None
            }
        }
    }

    /// The upload segment of `w`, if it was offered one.
    pub fn get(&self, w: WorkerId) -> Option<Arc<Segment>> {
        self.lock().get(&w).cloned()
    }

    /// The write access to the parameter segment, where the parameters are to be kept (see
    /// [`crate::store`]); `None` without shared memory, or when it was taken already.
    pub fn take_parameters(&self, n_params: usize) -> Option<F32Regions> {
        let (seg, _) = self.parameters.as_ref()?;
        F32Regions::take(Arc::clone(seg), n_params)
            .inspect_err(|e| tracing::warn!("parameters not in shared memory: {e}"))
            .ok()
    }

    /// Drops the segments of workers for which `member` is false.
    pub fn retain(&self, member: impl Fn(WorkerId) -> bool) {
        self.lock().retain(|w, _| member(*w));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecg_shared::shm::{Access, checksum};

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().expect("address"))
    }

    #[test]
    fn only_workers_on_this_host_are_offered_segments_and_they_read_the_versions_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let segs = Segments::new(Some(dir.path().to_path_buf()), 1000);
        let names = || std::fs::read_dir(dir.path()).expect("list").count();
        assert_eq!(names(), 0, "the parameter segment has no name");
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
        let (upload, params) = segs
            .offer(WorkerId(2), here, addr("127.0.0.1:4000"))
            .expect("loopback");
        assert_eq!((upload.region_bytes, upload.regions), (4000, 1));
        assert_eq!((params.region_bytes, params.regions), (4000, 2));
        assert!(std::path::Path::new(&upload.path).exists());
        assert!(
            segs.offer(WorkerId(3), here, addr("10.0.0.1:4000"))
                .is_some(),
            "this host's own address"
        );
        assert_eq!(names(), 2, "one upload segment each");
        assert!(segs.get(WorkerId(1)).is_none());

        // Worker 2 claims its upload segment (removing its path) and opens the parameter
        // segment; the state it reads is the one written for the version's region.
        let up = Segment::claim(
            std::path::Path::new(&upload.path),
            upload.nonce,
            4000,
            1,
            Access::ReadWrite,
        )
        .expect("claim upload");
        let p = Segment::open(
            std::path::Path::new(&params.path),
            params.nonce,
            4000,
            2,
            Access::ReadOnly,
        )
        .expect("open parameters");
        assert_eq!(names(), 1);
        let mut regions = segs.take_parameters(1000).expect("write access");
        assert!(segs.take_parameters(1000).is_none(), "taken once");
        regions.region_mut(parameter_region(5)).fill(2.5);
        let want: Vec<u8> = [2.5f32; 1000]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut got = vec![0u8; 4000];
        p.read(parameter_region(5), 0, &mut got, checksum(&want))
            .expect("read");
        p.read(parameter_region(6), 0, &mut got, checksum(&want))
            .expect_err("the other region");
        let sum = up.write(0, 0, &[1; 8]).expect("write upload");
        let s = segs.get(WorkerId(2)).expect("offered");
        assert_eq!(
            s.check_f32(0, 0, 8, sum).expect("seen by the coordinator"),
            None
        );

        // A dropped worker's unclaimed segment is removed with it.
        segs.retain(|w| w == WorkerId(2));
        assert_eq!(names(), 0);
        segs.retain(|_| false);
        drop(s);
        assert!(segs.get(WorkerId(2)).is_none());
        let off = Segments::new(None, 1000);
        assert!(off.offer(WorkerId(4), here, addr("127.0.0.1:1")).is_none());
        assert!(off.take_parameters(1000).is_none());
    }
}
