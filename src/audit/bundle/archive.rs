//! A bundle as one file: a POSIX ustar archive of its directory, as the staff API serves
//! it for download and `ansinh audit verify-bundle` reads it (`tar -xf` gives the
//! directory `export` writes). Pure: bytes in, bytes out.
//!
//! Written the same way every time (mode 0644, owner 0, time 0, files in `FILES` order),
//! so the same bundle is the same archive byte for byte. Read back strictly: every file
//! of a bundle exactly once, each within its bound (`file_bytes_max`), every header's checksum
//! right, nothing else in it but the directory entry.

use super::{BundleError, BundleFiles, FILE_BYTES_MAX, FILES, file_bytes_max};

/// A tar block.
const BLOCK: usize = 512;
/// The longest name a ustar header holds without its prefix field.
const NAME_BYTES_MAX: usize = 100;
/// Most entries read from an archive: the bundle's files and its directory. More is not a
/// bundle, and reading stops there.
pub const ARCHIVE_ENTRIES_MAX: usize = FILES.len() + 1;

/// A tar record: `tar` pads an archive with zero blocks to a multiple of this.
const RECORD: usize = 20 * BLOCK;

/// The largest archive read: the directory entry, every file at its bound with its
/// header and padding, the two closing blocks and the padding to a record.
pub const ARCHIVE_BYTES_MAX: u64 = {
    let mut total = (BLOCK + 2 * BLOCK + RECORD) as u64;
    let mut i = 0;
    while i < FILES.len() {
        total += BLOCK as u64 + FILE_BYTES_MAX[i].div_ceil(BLOCK as u64) * BLOCK as u64;
        i += 1;
    }
    total
};

/// The archive name a bundle of `household` is downloaded as, and its directory inside.
pub fn directory_name(scope: &str) -> String {
    format!("bundle-{scope}")
}

/// The bundle's files as a ustar archive, inside the directory `dir` (which must be a
/// plain name: ASCII, no `/`, short enough for a header).
pub fn to_tar(files: &BundleFiles, dir: &str) -> Vec<u8> {
    assert!(
        dir.is_ascii() && !dir.contains('/') && dir.len() + 1 + 32 < NAME_BYTES_MAX,
        "a bundle directory is a short plain name"
    );
    let total: usize = files
        .files()
        .iter()
        .map(|(_, bytes)| BLOCK + bytes.len().div_ceil(BLOCK) * BLOCK)
        .sum();
    let mut out = Vec::with_capacity(BLOCK + total + 2 * BLOCK);
    out.extend_from_slice(&header(&format!("{dir}/"), 0, b'5', 0o755));
    for (name, bytes) in files.files() {
        out.extend_from_slice(&header(
            &format!("{dir}/{name}"),
            bytes.len() as u64,
            b'0',
            0o644,
        ));
        out.extend_from_slice(bytes);
        out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
    }
    // The end of the archive: two zero blocks.
    out.resize(out.len() + 2 * BLOCK, 0);
    out
}

fn octal(field: &mut [u8], value: u64) {
    // Digits, then a NUL, right-aligned with leading zeros, as tar writes them.
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

fn header(name: &str, size: u64, kind: u8, mode: u64) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], mode);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 0);
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let sum = checksum(&h);
    // Six digits, a NUL and a space.
    h[148..154].copy_from_slice(format!("{sum:06o}").as_bytes());
    h[154] = 0;
    h[155] = b' ';
    h
}

/// The header's checksum: every byte summed, the checksum field counted as spaces.
fn checksum(h: &[u8]) -> u64 {
    h.iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                u64::from(b' ')
            } else {
                u64::from(*b)
            }
        })
        .sum()
}

fn read_octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let digits = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(digits, 8).ok()
}

fn refused(reason: impl Into<String>) -> BundleError {
    BundleError::Archive {
        file: "archive".into(),
        reason: reason.into(),
    }
}

/// The bundle's files from a ustar archive written by `to_tar` (or by `tar -cf` over a
/// bundle directory): each file of `FILES` found by its last path component, exactly once.
pub fn from_tar(archive: &[u8]) -> Result<BundleFiles, BundleError> {
    let mut out = BundleFiles::default();
    let mut seen = [false; FILES.len()];
    let mut at = 0usize;
    for _ in 0..=ARCHIVE_ENTRIES_MAX {
        let Some(h) = archive.get(at..at + BLOCK) else {
            return Err(refused("the archive ends inside a header"));
        };
        if h.iter().all(|b| *b == 0) {
            return match seen.iter().position(|s| !s) {
                Some(missing) => Err(BundleError::Archive {
                    file: FILES[missing].into(),
                    reason: "not in the archive".into(),
                }),
                None => Ok(out),
            };
        }
        let recorded =
            read_octal(&h[148..156]).ok_or_else(|| refused("a header's checksum is not octal"))?;
        if recorded != checksum(h) {
            return Err(refused(format!(
                "the header at byte {at} has a wrong checksum"
            )));
        }
        let size =
            read_octal(&h[124..136]).ok_or_else(|| refused("a header's size is not octal"))?;
        let name_end = h[..NAME_BYTES_MAX]
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(NAME_BYTES_MAX);
        let name =
            std::str::from_utf8(&h[..name_end]).map_err(|_| refused("a name is not UTF-8"))?;
        at += BLOCK;
        match h[156] {
            b'5' if size == 0 => continue,
            b'0' | 0 => {}
            other => {
                return Err(refused(format!(
                    "{name:?} is not a plain file (type {:?})",
                    other as char
                )));
            }
        }
        let file = name.rsplit('/').next().unwrap_or(name);
        let Some(index) = FILES.iter().position(|f| *f == file) else {
            return Err(refused(format!("{name:?} is not a file of a bundle")));
        };
        if seen[index] {
            return Err(refused(format!("{file} is in the archive twice")));
        }
        // From the header, before any of the file is copied.
        let max = file_bytes_max(file);
        if size > max {
            return Err(BundleError::TooLarge {
                file: file.into(),
                bytes: size,
                max,
            });
        }
        let size = size as usize;
        let Some(bytes) = archive.get(at..at + size) else {
            return Err(refused(format!("the archive ends inside {file}")));
        };
        seen[index] = true;
        for (name, slot) in out.files_mut() {
            if name == file {
                *slot = bytes.to_vec();
            }
        }
        at += size.div_ceil(BLOCK) * BLOCK;
    }
    Err(refused(format!(
        "more than {ARCHIVE_ENTRIES_MAX} entries: not a bundle"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BundleFiles {
        let mut files = BundleFiles::default();
        for (i, (_, bytes)) in files.files_mut().into_iter().enumerate() {
            *bytes = vec![b'a' + i as u8; 100 * i + 7];
        }
        files
    }

    #[test]
    fn an_archive_reads_back_as_the_files_it_was_made_of() {
        let files = sample();
        let tar = to_tar(&files, "bundle-0100007-000001");
        assert_eq!(tar.len() % BLOCK, 0);
        assert_eq!(from_tar(&tar).unwrap(), files);
        assert_eq!(
            to_tar(&files, "bundle-0100007-000001"),
            tar,
            "one archive per bundle"
        );
    }

    #[test]
    fn a_damaged_or_incomplete_archive_is_refused() {
        let tar = to_tar(&sample(), "b");
        let mut flipped = tar.clone();
        flipped[BLOCK + 3] ^= 1;
        assert!(
            from_tar(&flipped).is_err(),
            "a changed name fails its checksum"
        );
        assert!(from_tar(&tar[..tar.len() / 2]).is_err());
        assert!(from_tar(&tar[..BLOCK]).is_err());
        assert!(
            from_tar(&[0u8; 2 * BLOCK]).is_err(),
            "an empty archive is no bundle"
        );
    }
}
