//! The checksum that tells a chunk in shared memory from a stale or half-rewritten one.

/// A position-sensitive checksum of `data` (Fletcher-style sums of little-endian 64-bit words
/// in four lanes, then the tail bytes): it tells a chunk from a stale or half-rewritten one,
/// at memory speed. Not a defence against a malicious writer (the cluster token and the
/// segments' owner-only mode are).
pub fn checksum(data: &[u8]) -> u64 {
    let mut sum = Checksum::new();
    sum.update(data);
    sum.finish()
}

/// The [`checksum`] of bytes fed in pieces, in order.
#[derive(Debug, Clone, Default)]
pub struct Checksum {
    a: [u64; 4],
    b: [u64; 4],
    len: u64,
    /// Bytes of an incomplete 32-byte word.
    pending: [u8; 32],
    n_pending: usize,
}

impl Checksum {
    /// The checksum of nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds `data`.
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.n_pending > 0 {
            let take = (32 - self.n_pending).min(data.len());
            self.pending[self.n_pending..self.n_pending + take].copy_from_slice(&data[..take]);
            self.n_pending += take;
            data = &data[take..];
            if self.n_pending < 32 {
                return;
            }
            let pending = self.pending;
            self.words(&pending);
            self.n_pending = 0;
        }
        let whole = data.len() / 32 * 32;
        self.words(&data[..whole]);
        let tail = &data[whole..];
        self.pending[..tail.len()].copy_from_slice(tail);
        self.n_pending = tail.len();
    }

    /// Feeds `values` as little-endian bytes.
    pub fn update_f32(&mut self, values: &[f32]) {
        self.update(bytemuck::cast_slice(values));
    }

    /// Feeds `data`, a whole number of 32-byte words.
    fn words(&mut self, data: &[u8]) {
        let (mut a, mut b) = (self.a, self.b);
        for word in data.chunks_exact(32) {
            // One unaligned load of four words (byte by byte, the sums ran 3x slower).
            let w: [u64; 4] = bytemuck::pod_read_unaligned(word);
            for l in 0..4 {
                let w = u64::from_le(w[l]);
                a[l] = a[l].wrapping_add(w);
                b[l] = b[l].wrapping_add(a[l]);
            }
        }
        (self.a, self.b) = (a, b);
    }

    /// The checksum of everything fed.
    pub fn finish(&self) -> u64 {
        let mut h = self.len;
        for l in 0..4 {
            h = h
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .wrapping_add(self.a[l]);
            h = h
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .wrapping_add(self.b[l]);
        }
        for &t in &self.pending[..self.n_pending] {
            h = h.wrapping_mul(0x100_0000_01b3).wrapping_add(u64::from(t));
        }
        h
    }
}
