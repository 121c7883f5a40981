//! Shared memory between the coordinator and the workers on its own host.
//!
//! Over gRPC every byte of a gradient or parameter chunk is copied by the sender's HTTP/2
//! stack, the kernel twice and the receiver's stack. A worker on the coordinator's own host
//! instead hands chunks through files on a tmpfs (`/dev/shm`) that both processes map; gRPC
//! carries only each chunk's offset, length and checksum.
//!
//! Two kinds of segment, both a header page (a magic number, the nonce, the region size and
//! the number of regions) followed by page-aligned regions of the same size:
//! - a worker's **upload segment** (one region): the worker writes its gradient chunks there;
//!   the coordinator checks each chunk where it lies (checksum and finiteness, one read) and
//!   later sums it straight from there. The worker writes the region once a step (it may be
//!   summed until the step commits); a value found not finite when summed, after its check
//!   said otherwise, gets its upload refused;
//! - the **parameter segment** (two regions, one per parity of the state version): the
//!   coordinator keeps the parameters there ([`F32Regions`]), so Adam writes the new ones in
//!   place, once for every worker, and each worker copies them out and checks the checksum of
//!   its copy. A worker maps it read-only.
//!
//! The coordinator creates an upload segment with a random nonce and tells the worker its path
//! and nonce; the worker opens it, checks the nonce (a worker in another mount namespace, or on
//! another host that happens to have the same path, finds another file or none, and stays on
//! gRPC) and removes the path: from then on the memory lives as long as either mapping, and
//! nothing is left behind on a crash. The parameter segment has no name at all (an
//! `O_TMPFILE`): workers open it through the coordinator's descriptor under `/proc`
//! ([`Segment::proc_path`]), so it goes with the coordinator's process.
//!
//! The checksums catch a chunk that is torn or stale where it is checked (a parameter chunk
//! rewritten for a newer version while a slow worker reads it, an upload chunk never written):
//! such a chunk is refused.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use crate::{Error, Result};

mod checksum;
mod regions;

pub use checksum::{Checksum, checksum};
pub use regions::F32Regions;

/// Bytes before the first region (one page, so that the regions are page-aligned).
const HEADER: usize = 4096;
const MAGIC: &[u8; 8] = b"ECGSHM02";
/// Bytes of the header that carry something.
const HEADER_USED: usize = 32;

/// How a segment is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read and write (the coordinator's mappings; a worker's upload segment).
    ReadWrite,
    /// Read only (a worker's parameter segment): a write is an error, never a fault.
    ReadOnly,
}

/// A mapped segment.
pub struct Segment {
    map: MmapRaw,
    /// Bytes in each region.
    region: usize,
    regions: usize,
    writable: bool,
    path: PathBuf,
    /// Whether the path is ours to remove when dropped (the creator's, until it is removed).
    remove_on_drop: bool,
    /// The open file of a segment without a name, through whose descriptor other processes
    /// open it ([`Segment::proc_path`]).
    unnamed: Option<File>,
    /// Whether its writes were handed to an [`F32Regions`].
    taken: AtomicBool,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("path", &self.path)
            .field("region", &self.region)
            .field("regions", &self.regions)
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

/// The size of a segment's file.
fn file_len(region: usize, regions: usize) -> usize {
    HEADER + regions * padded(region)
}

/// A fresh name for a segment in `dir`.
fn fresh_name(dir: &Path) -> PathBuf {
    dir.join(format!(
        "ecg-cluster-{}-{:016x}.shm",
        std::process::id(),
        rand::random::<u64>()
    ))
}

impl Segment {
    /// Creates a segment of `regions` regions of `region` bytes at a new path in `dir`,
    /// owner-only, every page reserved up front (a full tmpfs is an error here, not a bus error
    /// later). Returns it with its nonce; the path is removed when it is dropped.
    pub fn create(dir: &Path, region: usize, regions: usize) -> Result<(Segment, u64)> {
        let path = fresh_name(dir);
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
        match Self::init(file, path.clone(), region, regions, false) {
            Ok((mut seg, nonce)) => {
                seg.remove_on_drop = true;
                Ok((seg, nonce))
            }
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Creates a segment without a name in `dir` (an `O_TMPFILE`, opened by others through
    /// [`Segment::proc_path`]); otherwise as [`Segment::create`]. Linux only.
    pub fn create_unnamed(dir: &Path, region: usize, regions: usize) -> Result<(Segment, u64)> {
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::OpenOptionsExt;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_TMPFILE)
                .mode(0o600)
                .open(dir)
                .map_err(|e| io(dir, e))?;
            Self::init(file, dir.to_path_buf(), region, regions, true)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (region, regions);
            Err(io(
                dir,
                std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "segments without a name need Linux",
                ),
            ))
        }
    }

    fn init(
        file: File,
        path: PathBuf,
        region: usize,
        regions: usize,
        keep_file: bool,
    ) -> Result<(Segment, u64)> {
        let nonce: u64 = rand::random();
        reserve(&file, file_len(region, regions)).map_err(|e| io(&path, e))?;
        let map = MmapRaw::map_raw(&file).map_err(|e| io(&path, e))?;
        let seg = Segment {
            map,
            region,
            regions,
            writable: true,
            path,
            remove_on_drop: false,
            unnamed: keep_file.then_some(file),
            taken: AtomicBool::new(false),
        };
        let mut header = [0u8; HEADER_USED];
        header[..8].copy_from_slice(MAGIC);
        header[8..16].copy_from_slice(&nonce.to_le_bytes());
        header[16..24].copy_from_slice(&(region as u64).to_le_bytes());
        header[24..32].copy_from_slice(&(regions as u64).to_le_bytes());
        // SAFETY: the mapping is at least HEADER bytes long and nobody else knows it yet.
        unsafe {
            std::ptr::copy_nonoverlapping(header.as_ptr(), seg.map.as_mut_ptr(), HEADER_USED)
        };
        Ok((seg, nonce))
    }

    /// The path through which other processes of this host open a segment made by
    /// [`Segment::create_unnamed`]: this process's descriptor of it under `/proc` (whoever may
    /// read this process's descriptors may open it; nobody removes it).
    pub fn proc_path(&self) -> Result<PathBuf> {
        let Some(file) = &self.unnamed else {
            return Err(Error::Config(format!(
                "{}: only a segment without a name is opened through /proc",
                self.path.display()
            )));
        };
        use std::os::fd::AsRawFd;
        Ok(PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            file.as_raw_fd()
        )))
    }

    /// Opens the segment at `path`, which must carry `nonce` and `regions` regions of `region`
    /// bytes, and removes the path (the mapping stays): how a worker takes its upload segment.
    pub fn claim(
        path: &Path,
        nonce: u64,
        region: usize,
        regions: usize,
        access: Access,
    ) -> Result<Segment> {
        let seg = Self::open(path, nonce, region, regions, access)?;
        std::fs::remove_file(path).map_err(|e| io(path, e))?;
        Ok(seg)
    }

    /// Opens the segment at `path`, which must carry `nonce` and `regions` regions of `region`
    /// bytes, leaving the path as it is.
    pub fn open(
        path: &Path,
        nonce: u64,
        region: usize,
        regions: usize,
        access: Access,
    ) -> Result<Segment> {
        let writable = access == Access::ReadWrite;
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|e| io(path, e))?;
        let len = file.metadata().map_err(|e| io(path, e))?.len();
        let want = file_len(region, regions) as u64;
        if len != want {
            return Err(Error::Config(format!(
                "{}: {len} bytes, not the {want} of a segment of {regions} regions of {region} bytes",
                path.display()
            )));
        }
        let map = if writable {
            MmapRaw::map_raw(&file)
        } else {
            MmapOptions::new().map_raw_read_only(&file)
        }
        .map_err(|e| io(path, e))?;
        let mut header = [0u8; HEADER_USED];
        // SAFETY: the mapping is `want` > HEADER_USED bytes long.
        unsafe { std::ptr::copy_nonoverlapping(map.as_ptr(), header.as_mut_ptr(), HEADER_USED) };
        let word = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().unwrap_or([0; 8]));
        if &header[..8] != MAGIC
            || word(8) != nonce
            || word(16) != region as u64
            || word(24) != regions as u64
        {
            return Err(Error::Config(format!(
                "{}: not the segment the coordinator made (another file at that path)",
                path.display()
            )));
        }
        Ok(Segment {
            map,
            region,
            regions,
            writable,
            path: path.to_path_buf(),
            remove_on_drop: false,
            unnamed: None,
            taken: AtomicBool::new(false),
        })
    }

    /// Where the segment is (or was, once claimed by the worker; its folder when it has no name).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in each region.
    pub fn region_bytes(&self) -> usize {
        self.region
    }

    /// The start of `len` bytes at `offset` in region `r`, or an error when they do not fit
    /// (or when `write` is asked of a read-only mapping).
    fn at(&self, r: usize, offset: u64, len: usize, write: bool) -> Result<*mut u8> {
        let end = offset.checked_add(len as u64);
        if r >= self.regions || end.is_none_or(|e| e > self.region as u64) {
            return Err(Error::Training(format!(
                "{len} bytes at offset {offset} of region {r} do not fit the shared segment of \
                 {} regions of {} bytes",
                self.regions, self.region
            )));
        }
        if write && !self.writable {
            return Err(Error::Training(format!(
                "{}: a read-only shared segment cannot be written",
                self.path.display()
            )));
        }
        if write && self.taken.load(Ordering::Acquire) {
            return Err(Error::Training(format!(
                "{}: the segment is written through its F32Regions only",
                self.path.display()
            )));
        }
        // SAFETY: HEADER + r * padded + offset + len <= the mapping's length (checked above).
        Ok(unsafe {
            self.map
                .as_mut_ptr()
                .add(HEADER + r * padded(self.region) + offset as usize)
        })
    }

    /// Writes `data` at `offset` of region `r`; returns its [`checksum`] (taken block by block
    /// from `data` as it is copied).
    pub fn write(&self, r: usize, offset: u64, data: &[u8]) -> Result<u64> {
        let to = self.at(r, offset, data.len(), true)?;
        let mut sum = Checksum::new();
        for (i, block) in data.chunks(BLOCK).enumerate() {
            sum.update(block);
            // SAFETY: `to` has room for `data` (checked by `at`), of which `block` is the
            // piece at i * BLOCK. The mapping is shared memory that the other process may touch
            // at the same time, which the reader's checksum detects.
            unsafe {
                std::ptr::copy_nonoverlapping(block.as_ptr(), to.add(i * BLOCK), block.len());
            }
        }
        Ok(sum.finish())
    }

    /// Copies `out.len()` bytes at `offset` of region `r` into `out` and checks that their
    /// checksum is `sum` (the writer's): an error when the chunk changed while read, or was
    /// never written. The checksum is taken of the copy (not of the shared memory, which may
    /// change meanwhile), block by block while it is in the core's cache.
    pub fn read(&self, r: usize, offset: u64, out: &mut [u8], sum: u64) -> Result<()> {
        let from = self.at(r, offset, out.len(), false)?;
        let mut got = Checksum::new();
        for (i, block) in out.chunks_mut(BLOCK).enumerate() {
            // SAFETY: `from` holds `out.len()` bytes (checked by `at`), of which this block is
            // the piece at i * BLOCK; see `write`.
            unsafe {
                std::ptr::copy_nonoverlapping(from.add(i * BLOCK), block.as_mut_ptr(), block.len());
            }
            got.update(block);
        }
        check(got.finish(), sum, offset, out.len())
    }

    /// Checks the `len` bytes (little-endian f32) at `offset` of region `r` where they lie:
    /// an error when their checksum is not `sum`; otherwise the first value that is NaN or
    /// infinite, with its index, if any. (A chunk that changes after this check is caught by
    /// the checksum its reader takes again.)
    pub fn check_f32(
        &self,
        r: usize,
        offset: u64,
        len: usize,
        sum: u64,
    ) -> Result<Option<(usize, f32)>> {
        let from = self.at(r, offset, len, false)?;
        // SAFETY: `from` holds `len` bytes (checked by `at`), read as plain bytes; see
        // `write_summed`.
        let data = unsafe { std::slice::from_raw_parts(from.cast_const(), len) };
        let mut got = Checksum::new();
        let mut bad = false;
        for block in data.chunks(BLOCK) {
            got.update(block);
            bad |= any_non_finite(block);
        }
        check(got.finish(), sum, offset, len)?;
        if !bad {
            return Ok(None);
        }
        // Where (rare: the chunk is refused), from a checked copy.
        let mut values = vec![0u8; len];
        self.read(r, offset, &mut values, sum)?;
        Ok(values.chunks_exact(4).enumerate().find_map(|(i, b)| {
            let bits = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            non_finite(bits).then(|| (i, f32::from_bits(bits)))
        }))
    }

    /// Copies the `out.len()` little-endian f32 at `offset` of region `r` into `out`, without a
    /// checksum: for values already checked where they lie ([`Segment::check_f32`]) that their
    /// writer leaves alone from then on.
    pub fn copy_f32(&self, r: usize, offset: u64, out: &mut [f32]) -> Result<()> {
        let out: &mut [u8] = bytemuck::cast_slice_mut(out);
        let from = self.at(r, offset, out.len(), false)?;
        // SAFETY: `from` holds `out.len()` bytes (checked by `at`); see `write`.
        unsafe { std::ptr::copy_nonoverlapping(from, out.as_mut_ptr(), out.len()) };
        Ok(())
    }
}

/// Bytes handled at a time by the copies that take a checksum: small enough to stay in the
/// core's first-level cache between the copy and the sums.
const BLOCK: usize = 16 * 1024;

/// Whether any of the little-endian f32 in `block` is NaN or infinite (branch-free).
fn any_non_finite(block: &[u8]) -> bool {
    let mut words = block.chunks_exact(32);
    let mut bad = false;
    for word in &mut words {
        let v: [u32; 8] = bytemuck::pod_read_unaligned(word);
        bad |= v
            .iter()
            .fold(false, |acc, &x| acc | non_finite(u32::from_le(x)));
    }
    bad | words
        .remainder()
        .chunks_exact(4)
        .any(|b| non_finite(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
}

/// Whether the f32 of these bits is NaN or infinite.
#[inline(always)]
fn non_finite(bits: u32) -> bool {
    bits & 0x7f80_0000 == 0x7f80_0000
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

#[cfg(test)]
mod tests;
