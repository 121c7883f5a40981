//! Where the coordinator keeps the parameters of the current state version and writes those of
//! the next: two vectors of its own, or the two regions of the parameter segment (version v in
//! region v % 2, see [`crate::segments`]), from which the workers on its host copy them
//! without another copy being made for them.
use ecg_shared::shm::F32Regions;

use crate::segments::parameter_region;
use crate::{Error, Result};

/// The parameters of the current version and room for the next.
#[derive(Debug)]
pub enum ParamStore {
    /// In the coordinator's own memory.
    Private {
        /// The current version's.
        current: Vec<f32>,
        /// The next version's (filled during a step).
        next: Vec<f32>,
    },
    /// In the parameter segment.
    Shared(F32Regions),
}

impl ParamStore {
    /// `current` in the coordinator's own memory.
    pub fn private(current: Vec<f32>) -> Self {
        let next = vec![0.0; current.len()];
        ParamStore::Private { current, next }
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        match self {
            ParamStore::Private { current, .. } => current.len(),
            ParamStore::Shared(r) => r.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the parameters lie in the parameter segment.
    pub fn is_shared(&self) -> bool {
        matches!(self, ParamStore::Shared(_))
    }

    /// The parameters of `version`, the current one.
    pub fn current(&self, version: u64) -> &[f32] {
        match self {
            ParamStore::Private { current, .. } => current,
            ParamStore::Shared(r) => r.region(parameter_region(version)),
        }
    }

    /// The parameters of `version` (the current one), to read, and room for those of
    /// `version + 1`, to write.
    pub fn step(&mut self, version: u64) -> Result<(&[f32], &mut [f32])> {
        match self {
            ParamStore::Private { current, next } => Ok((current, next)),
            ParamStore::Shared(r) => {
                Ok(r.split(parameter_region(version), parameter_region(version + 1))?)
            }
        }
    }

    /// Makes the parameters written by [`ParamStore::step`] the current ones.
    pub fn commit(&mut self) {
        if let ParamStore::Private { current, next } = self {
            std::mem::swap(current, next);
        }
    }

    /// Replaces the parameters of `version`, the current one.
    pub fn set(&mut self, version: u64, values: &[f32]) -> Result<()> {
        if values.len() != self.len() {
            return Err(Error::Server(format!(
                "{} parameters given for {}",
                values.len(),
                self.len()
            )));
        }
        match self {
            ParamStore::Private { current, .. } => current.copy_from_slice(values),
            ParamStore::Shared(r) => r
                .region_mut(parameter_region(version))
                .copy_from_slice(values),
        }
        Ok(())
    }

    /// Moves the parameters of `version`, the current one, into `regions`, which holds them
    /// from then on.
    pub fn share(&mut self, version: u64, mut regions: F32Regions) -> Result<()> {
        if regions.len() != self.len() {
            return Err(Error::Server(format!(
                "a parameter segment for {} values, not {}",
                regions.len(),
                self.len()
            )));
        }
        regions
            .region_mut(parameter_region(version))
            .copy_from_slice(self.current(version));
        *self = ParamStore::Shared(regions);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecg_shared::shm::Segment;
    use std::sync::Arc;

    fn step_twice(store: &mut ParamStore) -> Vec<f32> {
        for version in [7u64, 8] {
            let (cur, next) = store.step(version).expect("step");
            for (n, c) in next.iter_mut().zip(cur) {
                *n = c + 1.0;
            }
            store.commit();
        }
        store.current(9).to_vec()
    }

    #[test]
    fn private_and_shared_stores_step_alike_and_the_shared_one_is_where_readers_look() {
        let start: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let want: Vec<f32> = start.iter().map(|v| v + 2.0).collect();
        let mut private = ParamStore::private(start.clone());
        assert!(!private.is_shared());
        assert_eq!(step_twice(&mut private), want);

        let dir = tempfile::tempdir().expect("tempdir");
        let (seg, _) = Segment::create(dir.path(), 40, 2).expect("segment");
        let seg = Arc::new(seg);
        let mut shared = ParamStore::private(start.clone());
        shared
            .share(7, F32Regions::take(Arc::clone(&seg), 10).expect("take"))
            .expect("share");
        assert!(shared.is_shared());
        assert_eq!(shared.current(7), &start[..]);
        assert_eq!(step_twice(&mut shared), want);
        // Version 9 lies in region 1, where a reader of the segment finds it.
        let bytes: Vec<u8> = want.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut got = vec![0u8; 40];
        seg.read(1, 0, &mut got, ecg_shared::shm::checksum(&bytes))
            .expect("read");
        shared.set(9, &start).expect("set");
        assert_eq!(shared.current(9), &start[..]);
        shared.set(9, &start[1..]).expect_err("wrong length");
        let (seg2, _) = Segment::create(dir.path(), 40, 2).expect("segment");
        let other = F32Regions::take(Arc::new(seg2), 9).expect("take");
        ParamStore::private(start)
            .share(0, other)
            .expect_err("another size");
    }
}
