//! Shared memory between the coordinator and a worker on the same host.
//!
//! Over gRPC every byte of a gradient or parameter chunk is copied by the sender's HTTP/2
//! stack, the kernel twice and the receiver's stack. A worker on the coordinator's own host
//! can instead hand chunks through a file on a tmpfs (`/dev/shm`) that both map: the sender
//! writes the chunk in place and sends, over gRPC as before, only its offset, length and
//! checksum; the receiver copies it out and checks the checksum of its copy. The checksum
//! makes the scheme safe against every race (a stale writer, a chunk rewritten while read):
//! a chunk whose copy does not match is refused like a malformed message.
//!
//! A segment holds a header page (a magic number, the nonce, the region size) and two regions
//! of the same size: [`Region::Upload`] (the worker writes its gradient there) and
//! [`Region::Download`] (the coordinator writes parameters there). The coordinator creates it
//! with a random nonce and tells the worker its path and nonce; the worker opens it, checks the
//! nonce (a worker in another mount namespace, or on another host that happens to have the
//! same path, finds another file or none, and stays on gRPC) and removes the path: from then
//! on the memory lives as long as either mapping, and nothing is left behind on a crash.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use memmap2::MmapRaw;

use crate::{Error, Result};

/// Bytes before the first region (one page, so that the regions are page-aligned).
const HEADER: usize = 4096;
const MAGIC: &[u8; 8] = b"ECGSHM01";

/// One of a segment's two regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// Written by the worker (gradient chunks), read by the coordinator.
    Upload,
    /// Written by the coordinator (parameter chunks), read by the worker.
    Download,
}

/// A mapped segment.
pub struct Segment {
    map: MmapRaw,
    /// Bytes in each region.
    region: usize,
    path: PathBuf,
    /// Whether the path is ours to remove when dropped (the creator's, until it is removed).
    remove_on_drop: bool,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("path", &self.path)
            .field("region", &self.region)
            .finish()
    }
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A region's size rounded up to whole pages.
fn padded(region: usize) -> usize {
    region.div_ceil(HEADER) * HEADER
}

impl Segment {
    /// Creates a segment with regions of `region` bytes in `dir`, owner-only, every page
    /// reserved up front (a full tmpfs is an error here, not a bus error later). Returns it
    /// with its nonce.
    pub fn create(dir: &Path, region: usize) -> Result<(Segment, u64)> {
        let nonce: u64 = rand::random();
        let path = dir.join(format!(
            "ecg-cluster-{}-{nonce:016x}.shm",
            std::process::id()
        ));
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| io(&path, e))?
        };
        let len = HEADER + 2 * padded(region);
        let made = reserve(&file, len)
            .map_err(|e| io(&path, e))
            .and_then(|()| MmapRaw::map_raw(&file).map_err(|e| io(&path, e)));
        let map = match made {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        let seg = Segment {
            map,
            region,
            path,
            remove_on_drop: true,
        };
        let mut header = [0u8; 24];
        header[..8].copy_from_slice(MAGIC);
        header[8..16].copy_from_slice(&nonce.to_le_bytes());
        header[16..].copy_from_slice(&(region as u64).to_le_bytes());
        // SAFETY: the mapping is at least HEADER bytes long and nobody else knows it yet.
        unsafe { std::ptr::copy_nonoverlapping(header.as_ptr(), seg.map.as_mut_ptr(), 24) };
        Ok((seg, nonce))
    }

    /// Opens the segment at `path`, which must carry `nonce` and regions of `region` bytes,
    /// and removes the path (the mapping stays).
    pub fn open(path: &Path, nonce: u64, region: usize) -> Result<Segment> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| io(path, e))?;
        let len = file.metadata().map_err(|e| io(path, e))?.len();
        let want = (HEADER + 2 * padded(region)) as u64;
        if len != want {
            return Err(Error::Config(format!(
                "{}: {len} bytes, not the {want} of a segment for {region}-byte regions",
                path.display()
            )));
        }
        let map = MmapRaw::map_raw(&file).map_err(|e| io(path, e))?;
        let mut header = [0u8; 24];
        // SAFETY: the mapping is `want` > 24 bytes long.
        unsafe { std::ptr::copy_nonoverlapping(map.as_ptr(), header.as_mut_ptr(), 24) };
        let word = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().unwrap_or([0; 8]));
        if &header[..8] != MAGIC || word(8) != nonce || word(16) != region as u64 {
            return Err(Error::Config(format!(
                "{}: not the segment the coordinator made (another file at that path)",
                path.display()
            )));
        }
        std::fs::remove_file(path).map_err(|e| io(path, e))?;
        Ok(Segment {
            map,
            region,
            path: path.to_path_buf(),
            remove_on_drop: false,
        })
    }

    /// Where the segment is (or was, once opened by the worker).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in each region.
    pub fn region_bytes(&self) -> usize {
        self.region
    }

    /// The start of `len` bytes at `offset` in `r`, or an error when they do not fit.
    fn at(&self, r: Region, offset: u64, len: usize) -> Result<*mut u8> {
        let end = offset.checked_add(len as u64);
        if end.is_none_or(|e| e > self.region as u64) {
            return Err(Error::Training(format!(
                "{} bytes at offset {offset} do not fit the shared region of {} bytes",
                len, self.region
            )));
        }
        let base = match r {
            Region::Upload => HEADER,
            Region::Download => HEADER + padded(self.region),
        };
        // SAFETY: base + offset + len <= the mapping's length (checked above).
        Ok(unsafe { self.map.as_mut_ptr().add(base + offset as usize) })
    }

    /// Writes `data` at `offset` of region `r`; returns its [`checksum`] (taken in the same
    /// pass as the copy).
    pub fn write(&self, r: Region, offset: u64, data: &[u8]) -> Result<u64> {
        let to = self.at(r, offset, data.len())?;
        // SAFETY: `to` has room for `data` (checked by `at`); the mapping is shared memory
        // that the other process may touch at the same time, which the reader's checksum of
        // its own copy detects.
        Ok(unsafe { copy_summed(data.as_ptr(), to, data.len()) })
    }

    /// Copies `out.len()` bytes at `offset` of region `r` into `out` and checks that their
    /// checksum is `sum` (the writer's): an error when the chunk changed while read, or was
    /// never written.
    pub fn read(&self, r: Region, offset: u64, out: &mut [u8], sum: u64) -> Result<()> {
        let from = self.at(r, offset, out.len())?;
        // SAFETY: `from` holds `out.len()` bytes (checked by `at`); see `write`.
        let got = unsafe { copy_summed(from, out.as_mut_ptr(), out.len()) };
        check(got, sum, offset, out.len())
    }

    /// The `len` bytes at `offset` of region `r`, copied into a new vector (never filled
    /// before), checked as [`Segment::read`] checks them.
    pub fn read_vec(&self, r: Region, offset: u64, len: usize, sum: u64) -> Result<Vec<u8>> {
        let from = self.at(r, offset, len)?;
        let mut out = Vec::with_capacity(len);
        // SAFETY: `from` holds `len` bytes (see `read`) and `out` has room for them; every
        // byte of `out` is written before its length is set, and any byte is a valid `u8`.
        let got = unsafe {
            let got = copy_summed(from, out.as_mut_ptr(), len);
            out.set_len(len);
            got
        };
        check(got, sum, offset, len)?;
        Ok(out)
    }
}

fn check(got: u64, sum: u64, offset: u64, len: usize) -> Result<()> {
    if got == sum {
        return Ok(());
    }
    Err(Error::Training(format!(
        "{len} bytes at offset {offset} of the shared region: checksum {got:016x}, \
         the writer's {sum:016x} (rewritten while read)"
    )))
}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.remove_on_drop {
            // Gone already when the worker opened it.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Reserves `len` bytes of `file`'s storage (on a tmpfs: its pages).
fn reserve(file: &File, len: usize) -> std::io::Result<()> {
    file.set_len(len as u64)?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid descriptor and a non-negative range.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
    }
    Ok(())
}

/// A position-sensitive checksum of `data` (Fletcher-style sums of little-endian 64-bit words
/// in four lanes, then the tail bytes): it tells a chunk from a stale or half-rewritten one,
/// at memory speed. Not a defence against a malicious writer (the cluster token and the
/// segment's owner-only mode are).
pub fn checksum(data: &[u8]) -> u64 {
    let mut sums = Sums::default();
    let mut blocks = data.chunks_exact(32);
    for block in &mut blocks {
        let mut w = [0u64; 4];
        for (l, w) in w.iter_mut().enumerate() {
            *w = u64::from_le_bytes(block[l * 8..l * 8 + 8].try_into().unwrap_or([0; 8]));
        }
        sums.add(w);
    }
    sums.finish(data.len(), blocks.remainder())
}

/// Copies `len` bytes from `from` to `to` and returns their [`checksum`], reading each byte
/// once (the copy and the sums in one pass over memory).
///
/// # Safety
/// `from` must be readable and `to` writable for `len` bytes, and the two must not overlap.
unsafe fn copy_summed(from: *const u8, to: *mut u8, len: usize) -> u64 {
    let mut sums = Sums::default();
    let whole = len / 32 * 32;
    let mut i = 0;
    while i < whole {
        // SAFETY: i + 32 <= len; unaligned reads and writes of plain words.
        let w: [u64; 4] = unsafe { std::ptr::read_unaligned(from.add(i).cast()) };
        unsafe { std::ptr::write_unaligned(to.add(i).cast(), w) };
        sums.add(w.map(u64::from_le));
        i += 32;
    }
    let mut tail = [0u8; 32];
    let tail = &mut tail[..len - whole];
    // SAFETY: the last `len - whole` (< 32) bytes of both ranges.
    unsafe {
        std::ptr::copy_nonoverlapping(from.add(whole), tail.as_mut_ptr(), tail.len());
        std::ptr::copy_nonoverlapping(tail.as_ptr(), to.add(whole), tail.len());
    }
    sums.finish(len, tail)
}

/// The running sums of [`checksum`].
#[derive(Default)]
struct Sums {
    a: [u64; 4],
    b: [u64; 4],
}

impl Sums {
    #[inline(always)]
    fn add(&mut self, w: [u64; 4]) {
        for ((a, b), w) in self.a.iter_mut().zip(&mut self.b).zip(w) {
            *a = a.wrapping_add(w);
            *b = b.wrapping_add(*a);
        }
    }

    fn finish(&self, len: usize, tail: &[u8]) -> u64 {
        let mut h = len as u64;
        for l in 0..4 {
            h = h
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .wrapping_add(self.a[l]);
            h = h
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .wrapping_add(self.b[l]);
        }
        for &t in tail {
            h = h.wrapping_mul(0x100_0000_01b3).wrapping_add(u64::from(t));
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_travel_between_two_mappings_and_the_path_goes_once_opened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let region = 10_000;
        let (coord, nonce) = Segment::create(dir.path(), region).expect("create");
        assert!(coord.path().exists());
        let worker = Segment::open(coord.path(), nonce, region).expect("open");
        assert!(!coord.path().exists(), "the worker removes the path");
        let up: Vec<u8> = (0..4000u32).map(|i| (i * 7 % 251) as u8).collect();
        let sum = worker.write(Region::Upload, 4096, &up).expect("write");
        let mut got = vec![0u8; up.len()];
        coord
            .read(Region::Upload, 4096, &mut got, sum)
            .expect("read");
        assert_eq!(got, up);
        // The regions are apart: the download region at the same offset is still zero.
        let sum = coord
            .write(Region::Download, 0, &[9; 100])
            .expect("write down");
        let mut down = [0u8; 100];
        worker
            .read(Region::Download, 0, &mut down, sum)
            .expect("read down");
        assert_eq!(down, [9; 100]);
        coord
            .read(Region::Upload, 0, &mut [0u8; 100], checksum(&[9; 100]))
            .expect_err("the upload region's first bytes were never written");
    }

    #[test]
    fn a_rewritten_chunk_a_wrong_nonce_and_out_of_range_chunks_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (coord, nonce) = Segment::create(dir.path(), 4096).expect("create");
        let err = Segment::open(coord.path(), nonce ^ 1, 4096).expect_err("wrong nonce");
        assert!(err.to_string().contains("not the segment"), "{err}");
        assert!(coord.path().exists(), "a refused open leaves the path");
        let err = Segment::open(coord.path(), nonce, 8192).expect_err("wrong size");
        assert!(err.to_string().contains("bytes"), "{err}");
        let worker = Segment::open(coord.path(), nonce, 4096).expect("open");
        let sum = worker.write(Region::Upload, 0, &[1u8; 64]).expect("write");
        worker
            .write(Region::Upload, 32, &[2u8; 8])
            .expect("rewrite");
        let err = coord
            .read(Region::Upload, 0, &mut [0u8; 64], sum)
            .expect_err("rewritten while read");
        assert!(err.to_string().contains("checksum"), "{err}");
        let err = coord
            .write(Region::Download, 4090, &[0u8; 7])
            .expect_err("past the end");
        assert!(err.to_string().contains("do not fit"), "{err}");
        coord
            .read(Region::Download, u64::MAX, &mut [0u8; 1], 0)
            .expect_err("offset overflow");
    }

    #[test]
    fn the_creator_removes_a_path_nobody_opened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (seg, _) = Segment::create(dir.path(), 100).expect("create");
        let path = seg.path().to_path_buf();
        drop(seg);
        assert!(!path.exists());
        let err = Segment::create(&dir.path().join("missing"), 100).expect_err("no dir");
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn the_copy_and_its_checksum_in_one_pass_agree_with_the_checksum() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 31 % 256) as u8).collect();
        for (start, len) in [(0, 0), (0, 31), (0, 32), (1, 64), (3, 997), (0, 1000)] {
            let src = &data[start..start + len];
            let mut out = vec![0xaau8; len];
            // SAFETY: both ranges are `len` bytes long and apart.
            let sum = unsafe { copy_summed(src.as_ptr(), out.as_mut_ptr(), len) };
            assert_eq!(out, src, "copy of {len} bytes from {start}");
            assert_eq!(sum, checksum(src), "checksum of {len} bytes from {start}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let (seg, _) = Segment::create(dir.path(), 4096).expect("create");
        let sum = seg.write(Region::Upload, 8, &data[..999]).expect("write");
        assert_eq!(sum, checksum(&data[..999]));
        let got = seg.read_vec(Region::Upload, 8, 999, sum).expect("read");
        assert_eq!(got, &data[..999]);
        let err = seg
            .read_vec(Region::Upload, 8, 999, sum ^ 1)
            .expect_err("another checksum");
        assert!(err.to_string().contains("checksum"), "{err}");
        seg.read_vec(Region::Upload, 4000, 999, sum)
            .expect_err("past the end");
    }

    #[test]
    fn the_checksum_sees_order_and_length() {
        let a: Vec<u8> = (0..64).collect();
        let mut b = a.clone();
        b.swap(0, 8);
        assert_ne!(checksum(&a), checksum(&b), "words swapped");
        assert_ne!(checksum(&a[..63]), checksum(&a[..64]));
        assert_ne!(checksum(&[0; 32]), checksum(&[0; 40]), "zero padding");
        assert_eq!(checksum(&a), checksum(&a.clone()));
    }
}
