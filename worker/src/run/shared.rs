//! The shared memory of a worker on the coordinator's host (see `ecg_shared::shm`): its upload
//! segment and the coordinator's parameter segment, when both can be opened from here.
use std::sync::Arc;

use ecg_proto::v1;
use ecg_shared::shm::{Access, Segment};

/// The shared memory of a session (see `ecg_shared::shm`).
pub(super) struct Shared {
    /// This worker's upload segment.
    pub(super) upload: Arc<Segment>,
    /// The coordinator's parameter segment, mapped read-only.
    pub(super) parameters: Segment,
    /// The step of the last upload through the upload segment: the coordinator reads it there
    /// until that step commits, so another upload to the same step sends its chunks in their
    /// messages.
    uploaded_step: Option<u64>,
}

impl Shared {
    /// Whether an upload to `step` may go through the upload segment; if so, the segment is
    /// taken for that step.
    pub(super) fn take_for(&mut self, step: u64) -> bool {
        if self.uploaded_step == Some(step) {
            return false;
        }
        self.uploaded_step = Some(step);
        true
    }
}

/// The segments the coordinator offered, when they can be used from here: they must be the
/// files the coordinator made (their nonces), for this network's size. `None`, with the reason
/// logged, when they cannot: the chunks then travel over gRPC.
pub(super) fn open_shared(
    upload: Option<v1::SharedMemory>,
    parameters: Option<v1::SharedMemory>,
    n_params: usize,
) -> Option<Shared> {
    let region = n_params * 4;
    let open = |offer: &v1::SharedMemory, access: Access, claim: bool| {
        if offer.region_bytes != region as u64 {
            return Err(format!(
                "the offered shared memory has {}-byte regions, the network needs {region}",
                offer.region_bytes
            ));
        }
        let path = std::path::Path::new(&offer.path);
        let regions = offer.regions as usize;
        if claim {
            Segment::claim(path, offer.nonce, region, regions, access)
        } else {
            Segment::open(path, offer.nonce, region, regions, access)
        }
        .map_err(|e| e.to_string())
    };
    let (upload, parameters) = (upload?, parameters?);
    // The upload segment is this worker's (its path is removed once mapped); the parameter
    // segment is opened through the coordinator's descriptor, as every worker does.
    let opened = open(&upload, Access::ReadWrite, true)
        .and_then(|u| open(&parameters, Access::ReadOnly, false).map(|p| (u, p)));
    match opened {
        Ok((upload, parameters)) => Some(Shared {
            upload: Arc::new(upload),
            parameters,
            uploaded_step: None,
        }),
        Err(e) => {
            tracing::info!("shared memory not usable from here ({e}); chunks go over gRPC");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upload_segment_serves_one_upload_a_step() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (upload, _) = Segment::create(dir.path(), 64, 1).expect("upload");
        let (parameters, _) = Segment::create(dir.path(), 64, 2).expect("parameters");
        let mut shared = Shared {
            upload: Arc::new(upload),
            parameters,
            uploaded_step: None,
        };
        assert!(shared.take_for(3), "the first upload of step 3");
        assert!(
            !shared.take_for(3),
            "a second upload of step 3 (the first may not be summed yet) goes over gRPC"
        );
        assert!(
            shared.take_for(4),
            "step 4 begins once step 3 has committed"
        );
    }
}
