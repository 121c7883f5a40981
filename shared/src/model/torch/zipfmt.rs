//! The zip container of `torch.save` (PyTorch >= 1.6): entries `<prefix>/data.pkl` (the pickled
//! object), `<prefix>/byteorder` (`little`; absent in early files) and `<prefix>/data/<key>` (the
//! raw bytes of each storage). The prefix is whatever the writer chose (the file's stem,
//! `archive`, ...), so it is taken from the entry whose name ends in `data.pkl`.
use std::borrow::Cow;
use std::fs::File;
use std::io::{BufReader, Read};

use zip::ZipArchive;

use super::StorageSource;
use super::pickle::{Unpickled, unpickle};

/// An open zip checkpoint: its pickle and where its storages are.
pub(crate) struct ZipSource {
    archive: ZipArchive<BufReader<File>>,
    prefix: String,
}

fn read_entry(archive: &mut ZipArchive<BufReader<File>>, name: &str) -> Result<Vec<u8>, String> {
    let mut f = archive
        .by_name(name)
        .map_err(|e| format!("zip entry `{name}`: {e}"))?;
    let mut out = Vec::new();
    f.read_to_end(&mut out)
        .map_err(|e| format!("zip entry `{name}` is unreadable (truncated or corrupt?): {e}"))?;
    Ok(out)
}

/// Opens the archive and runs its `data.pkl`.
pub(crate) fn open(file: File) -> Result<(Unpickled, ZipSource), String> {
    let mut archive = ZipArchive::new(BufReader::new(file))
        .map_err(|e| format!("not a readable zip archive (truncated or corrupt?): {e}"))?;
    let names: Vec<String> = archive
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .collect();
    let pkl = names
        .iter()
        .filter(|n| n.as_str() == "data.pkl" || n.ends_with("/data.pkl"))
        .min_by_key(|n| n.len())
        .cloned()
        .ok_or_else(|| {
            let shown: Vec<&str> = names.iter().take(8).map(String::as_str).collect();
            format!(
                "zip archive has no data.pkl entry, so it is not a PyTorch checkpoint \
                 (entries: {}{})",
                shown.join(", "),
                if names.len() > shown.len() {
                    ", ..."
                } else {
                    ""
                }
            )
        })?;
    let prefix = pkl[..pkl.len() - "data.pkl".len()].to_string();
    let order = format!("{prefix}byteorder");
    if names.contains(&order) {
        let b = read_entry(&mut archive, &order)?;
        let b = String::from_utf8_lossy(&b);
        if b.trim() != "little" {
            return Err(format!(
                "storages are stored {:?}-endian; only little-endian is supported",
                b.trim()
            ));
        }
    }
    let data = read_entry(&mut archive, &pkl)?;
    let up = unpickle(&data, 0).map_err(|e| format!("{pkl}: {e}"))?;
    Ok((up, ZipSource { archive, prefix }))
}

impl StorageSource for ZipSource {
    fn storage(&mut self, key: &str) -> Result<Cow<'_, [u8]>, String> {
        let name = format!("{}data/{key}", self.prefix);
        if self.archive.index_for_name(&name).is_none() {
            return Err(format!(
                "storage `{key}` is missing from the archive (no entry `{name}`)"
            ));
        }
        read_entry(&mut self.archive, &name).map(Cow::Owned)
    }
}
