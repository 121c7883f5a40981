//! Which exams each step of an epoch trains on. `shuffle`: a permutation of the training exams
//! drawn from (seed, epoch), cut into batches of `batch_size` (the last one shorter). `seed`:
//! the authors' `BatchDataloader` order, windows of `batch_size` consecutive HDF5 rows (files
//! one after another) from the first training row on, keeping the training exams of each
//! window, so batches can be short; the same every epoch.
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::config::EpochOrder;
use crate::data::index::DatasetIndex;

/// A seed for epoch `epoch` of a run seeded with `seed` (distinct epochs, distinct streams).
pub fn epoch_seed(seed: u64, epoch: u64) -> u64 {
    let h = blake3::hash(&[seed.to_le_bytes(), epoch.to_le_bytes()].concat());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(b)
}

/// The batches of epoch `epoch`: index positions of `train` exams, every one exactly once.
pub fn epoch_batches(
    order: EpochOrder,
    index: &DatasetIndex,
    train: &[usize],
    batch_size: usize,
    seed: u64,
    epoch: u64,
) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    match order {
        EpochOrder::Shuffle => {
            let mut order = train.to_vec();
            order.shuffle(&mut Xoshiro256PlusPlus::seed_from_u64(epoch_seed(
                seed, epoch,
            )));
            order.chunks(batch_size).map(<[usize]>::to_vec).collect()
        }
        EpochOrder::Seed => {
            // Global row number: rows of the earlier files first.
            let mut offsets = Vec::with_capacity(index.files.len());
            let mut total = 0u64;
            for f in &index.files {
                offsets.push(total);
                total += f.info.n_rows as u64;
            }
            let rows: Vec<(u64, usize)> = train
                .iter()
                .map(|&p| {
                    let e = &index.exams[p];
                    (offsets[e.file as usize] + u64::from(e.row), p)
                })
                .collect();
            seed_windows(rows, batch_size)
        }
    }
}

/// The seed's `BatchDataloader` windows: `rows` are (global row, item) pairs of the selected
/// rows; windows of `batch_size` rows start at the first selected row; each non-empty window
/// is one batch of its items in row order.
pub fn seed_windows(mut rows: Vec<(u64, usize)>, batch_size: usize) -> Vec<Vec<usize>> {
    rows.sort_unstable();
    let Some(&(start, _)) = rows.first() else {
        return Vec::new();
    };
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current = u64::MAX;
    for (row, p) in rows {
        let window = (row - start) / batch_size.max(1) as u64;
        if window != current {
            batches.push(Vec::new());
            current = window;
        }
        if let Some(b) = batches.last_mut() {
            b.push(p);
        }
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_windows_follow_the_dataloader() {
        // Selected rows 2, 3, 5, 9, 10, 11 with windows of 3 from row 2: [2,5), [5,8), [8,11),
        // [11,14) -> {2,3}, {5}, {9,10}, {11}; the window [5,8) holds only row 5.
        let rows = vec![(9, 90), (2, 20), (3, 30), (5, 50), (10, 100), (11, 110)];
        assert_eq!(
            seed_windows(rows, 3),
            vec![vec![20, 30], vec![50], vec![90, 100], vec![110]]
        );
        assert!(seed_windows(Vec::new(), 3).is_empty());
    }

    #[test]
    fn shuffled_epochs_use_every_exam_once_and_differ() {
        let train: Vec<usize> = (0..103).map(|i| i * 2).collect();
        let index = DatasetIndex::default();
        let e0 = epoch_batches(EpochOrder::Shuffle, &index, &train, 10, 7, 0);
        let e1 = epoch_batches(EpochOrder::Shuffle, &index, &train, 10, 7, 1);
        assert_eq!(e0.len(), 11);
        assert!(e0[..10].iter().all(|b| b.len() == 10) && e0[10].len() == 3);
        for e in [&e0, &e1] {
            let mut all: Vec<usize> = e.iter().flatten().copied().collect();
            all.sort_unstable();
            assert_eq!(all, train);
        }
        assert_ne!(e0, e1);
        assert_eq!(
            e0,
            epoch_batches(EpochOrder::Shuffle, &index, &train, 10, 7, 0)
        );
    }
}
