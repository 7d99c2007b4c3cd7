//! A bundle as one file: a POSIX ustar archive of its directory, as the staff API serves
//! it for download and `ansinh audit verify-bundle` reads it (`tar -xf` gives the
//! directory `export` writes). Pure: bytes in, bytes out.
//!
//! Written the same way every time (files mode 0644, the directory 0755, owner 0, time 0,
//! files in `FILES` order), so the same bundle is the same archive byte for byte. Read
//! back strictly, as docs/BUNDLES.md says: ustar headers with right checksums; first the
//! directory entry `<dir>/`, then every file of a bundle exactly once as `<dir>/<file>`,
//! each within its bound (read from its header, before any of it is read); then the end
//! of the archive and nothing but zero padding. So `tar -xf` of an archive that verifies writes the
//! bundle's files in one directory and nothing else.

use std::io::Read;

use super::{BundleError, BundleFiles, FILE_BYTES_MAX, FILES, file_bytes_max};

/// A tar block.
const BLOCK: usize = 512;
/// A tar record: `tar` pads an archive with zero blocks to a multiple of this.
const RECORD: usize = 20 * BLOCK;
/// The longest name a ustar header holds without its prefix field.
const NAME_BYTES_MAX: usize = 100;
/// A ustar header's magic and version.
const USTAR: &[u8; 8] = b"ustar\x0000";

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

/// Reads exactly `buf.len()` bytes; `Ok(false)` at the end of the input before any.
fn read_block(input: &mut impl Read, buf: &mut [u8], what: &str) -> Result<bool, BundleError> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(refused(format!("the archive ends inside {what}"))),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_failed(e)),
        }
    }
    Ok(true)
}

fn read_failed(e: std::io::Error) -> BundleError {
    BundleError::Read {
        file: "archive".into(),
        reason: e.to_string(),
    }
}

/// One checked header: its name, size and type.
struct Header {
    name: String,
    size: u64,
    kind: u8,
}

fn read_header(h: &[u8; BLOCK], at: u64) -> Result<Header, BundleError> {
    let recorded = read_octal(&h[148..156])
        .ok_or_else(|| refused(format!("the header at byte {at}: checksum is not octal")))?;
    if recorded != checksum(h) {
        return Err(refused(format!(
            "the header at byte {at} has a wrong checksum"
        )));
    }
    if &h[257..265] != USTAR {
        return Err(refused(format!(
            "the header at byte {at} is not a POSIX ustar header (magic \"ustar\\0\" \"00\")"
        )));
    }
    // A name with a prefix is prefix/name to `tar`: it could place a file anywhere.
    if h[345] != 0 {
        return Err(refused(format!(
            "the header at byte {at} has a name prefix; a bundle's names have none"
        )));
    }
    let size = read_octal(&h[124..136])
        .ok_or_else(|| refused(format!("the header at byte {at}: size is not octal")))?;
    let name_end = h[..NAME_BYTES_MAX]
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(NAME_BYTES_MAX);
    let name = std::str::from_utf8(&h[..name_end])
        .map_err(|_| refused(format!("the header at byte {at}: name is not UTF-8")))?
        .to_string();
    Ok(Header {
        name,
        size,
        kind: h[156],
    })
}

/// The bundle's files from a ustar archive in memory (`read_tar`).
pub fn from_tar(archive: &[u8]) -> Result<BundleFiles, BundleError> {
    read_tar(archive)
}

/// The bundle's files from a ustar archive written by `to_tar` (or by `tar
/// --format=ustar -cf` over a bundle directory): the directory entry `<dir>/` first,
/// then each file of `FILES` exactly once as `<dir>/<file>`, in any order, each read
/// only once its header's size is within its bound; then at least two zero blocks and
/// nothing after them but zero padding to the end of a 10240-byte record.
pub fn read_tar(mut input: impl Read) -> Result<BundleFiles, BundleError> {
    let mut out = BundleFiles::default();
    let mut seen = [false; FILES.len()];
    let mut block = [0u8; BLOCK];
    let mut at = 0u64;

    if !read_block(&mut input, &mut block, "a header")? || block.iter().all(|b| *b == 0) {
        return Err(refused("the archive holds no entry"));
    }
    let directory = read_header(&block, at)?;
    let dir = directory
        .name
        .strip_suffix('/')
        .filter(|d| !d.is_empty() && *d != "." && *d != ".." && !d.contains('/'))
        .filter(|_| directory.kind == b'5' && directory.size == 0);
    let Some(dir) = dir else {
        return Err(refused(format!(
            "the first entry {:?} is not the bundle's directory (a name \"<dir>/\" of type 5)",
            directory.name
        )));
    };
    let dir = dir.to_string();
    at += BLOCK as u64;

    for _ in 0..FILES.len() {
        if !read_block(&mut input, &mut block, "a header")? {
            return Err(refused("the archive ends before its end blocks"));
        }
        if block.iter().all(|b| *b == 0) {
            let missing = seen.iter().position(|s| !s).unwrap_or_default();
            return Err(BundleError::Archive {
                file: FILES[missing].into(),
                reason: "not in the archive".into(),
            });
        }
        let header = read_header(&block, at)?;
        at += BLOCK as u64;
        let file = header
            .name
            .strip_prefix(dir.as_str())
            .and_then(|rest| rest.strip_prefix('/'));
        let index = file.and_then(|f| FILES.iter().position(|name| *name == f));
        let Some(index) = index else {
            return Err(refused(format!(
                "{:?} is not a file of the bundle in {dir}/",
                header.name
            )));
        };
        let file = FILES[index];
        if header.kind != b'0' {
            return Err(refused(format!(
                "{file} is not a plain file (type {:?})",
                header.kind as char
            )));
        }
        if seen[index] {
            return Err(refused(format!("{file} is in the archive twice")));
        }
        seen[index] = true;
        let max = file_bytes_max(file);
        if header.size > max {
            return Err(BundleError::TooLarge {
                file: file.into(),
                bytes: header.size,
                max,
            });
        }
        let slot = out
            .files_mut()
            .into_iter()
            .find_map(|(name, slot)| (name == file).then_some(slot))
            .expect("every name of FILES has a slot");
        // Grown as bytes arrive, not from the header's size: a header may lie.
        (&mut input)
            .take(header.size)
            .read_to_end(slot)
            .map_err(read_failed)?;
        if slot.len() as u64 != header.size {
            return Err(refused(format!("the archive ends inside {file}")));
        }
        let padding = (BLOCK - (header.size as usize % BLOCK)) % BLOCK;
        let padded = padding == 0 || read_block(&mut input, &mut block[..padding], file)?;
        if !padded || block[..padding].iter().any(|b| *b != 0) {
            return Err(refused(format!("{file} is not followed by zero padding")));
        }
        at += header.size + padding as u64;
    }

    // The end: two zero blocks, then nothing but zeros to the end of the record.
    let mut end = [0u8; 2 * BLOCK];
    if !read_block(&mut input, &mut end, "its end blocks")? || end.iter().any(|b| *b != 0) {
        return Err(refused(format!(
            "byte {at}: after the bundle's files, the archive must end (two zero blocks)"
        )));
    }
    at += end.len() as u64;
    let mut rest = Vec::new();
    input
        .take(RECORD as u64 + 1)
        .read_to_end(&mut rest)
        .map_err(read_failed)?;
    let padded = at.div_ceil(RECORD as u64) * RECORD as u64;
    let rest_ok = rest.is_empty() || at + rest.len() as u64 == padded;
    if !rest_ok || rest.iter().any(|b| *b != 0) {
        return Err(refused(format!(
            "byte {at}: data after the end of the archive (only zero padding to a multiple of {RECORD} bytes may follow)"
        )));
    }
    Ok(out)
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

    /// An archive of `entries` (name, type, content) as `to_tar` lays them out, with
    /// `end` after them.
    fn tar_of(entries: &[(&str, u8, &[u8])], end: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, bytes) in entries {
            let mode = if *kind == b'5' { 0o755 } else { 0o644 };
            out.extend_from_slice(&header(name, bytes.len() as u64, *kind, mode));
            out.extend_from_slice(bytes);
            out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
        }
        out.extend_from_slice(end);
        out
    }

    /// The sample's entries, in `dir`, with the file names `rename` gives.
    fn entries<'a>(
        files: &'a BundleFiles,
        dir: &str,
        rename: impl Fn(&str) -> String,
    ) -> Vec<(String, u8, &'a [u8])> {
        let mut out = vec![(format!("{dir}/"), b'5', &b""[..])];
        for (name, bytes) in files.files() {
            out.push((rename(&format!("{dir}/{name}")), b'0', bytes.as_slice()));
        }
        out
    }

    fn tar_with(entries: &[(String, u8, &[u8])], end: &[u8]) -> Vec<u8> {
        let borrowed: Vec<(&str, u8, &[u8])> = entries
            .iter()
            .map(|(n, k, b)| (n.as_str(), *k, *b))
            .collect();
        tar_of(&borrowed, end)
    }

    fn refused_as_archive(tar: &[u8], what: &str) {
        match from_tar(tar) {
            Err(BundleError::Archive { .. }) => {}
            other => panic!(
                "{what}: expected an Archive refusal, got {:?}",
                other.map(|_| "the files")
            ),
        }
    }

    const END: [u8; 2 * BLOCK] = [0; 2 * BLOCK];

    #[test]
    fn only_the_end_blocks_and_zero_padding_to_a_record_follow_the_files() {
        let files = sample();
        let tar = to_tar(&files, "bundle-x");
        assert_eq!(
            tar_with(&entries(&files, "bundle-x", str::to_string), &END),
            tar
        );
        // As `tar` writes it: padded with zero blocks to a 10240-byte record.
        let mut padded = tar.clone();
        padded.resize(tar.len().div_ceil(RECORD) * RECORD, 0);
        assert_ne!(padded.len(), tar.len());
        assert_eq!(from_tar(&padded).unwrap(), files);

        let mut appended = tar.clone();
        appended.extend_from_slice(&to_tar(&sample(), "evil"));
        refused_as_archive(&appended, "a second archive after the end");
        let mut one_byte = tar.clone();
        one_byte.push(b'x');
        refused_as_archive(&one_byte, "a byte after the end");
        let mut more_zeros = padded.clone();
        more_zeros.resize(padded.len() + BLOCK, 0);
        refused_as_archive(&more_zeros, "zeros beyond the record");
        let mut dirty = padded.clone();
        let last = dirty.len() - 1;
        dirty[last] = 1;
        refused_as_archive(&dirty, "a non-zero byte in the padding");
        refused_as_archive(&tar[..tar.len() - BLOCK], "one end block only");
        let mut dirty_end = tar.clone();
        let last = dirty_end.len() - 1;
        dirty_end[last] = 1;
        refused_as_archive(&dirty_end, "a non-zero end block");
    }

    #[test]
    fn every_file_is_in_the_one_directory_named_first() {
        let files = sample();
        for (what, rename) in [
            ("another directory", "other/manifest.json"),
            ("a parent directory", "../manifest.json"),
            ("an absolute path", "/tmp/manifest.json"),
            ("a path inside the directory", "bundle-x/sub/manifest.json"),
            ("a dot segment", "bundle-x/./manifest.json"),
            ("a name of no bundle file", "bundle-x/manifest.json.bak"),
        ] {
            let tar = tar_with(
                &entries(&files, "bundle-x", |n| {
                    if n == "bundle-x/manifest.json" {
                        rename.to_string()
                    } else {
                        n.to_string()
                    }
                }),
                &END,
            );
            refused_as_archive(&tar, what);
        }

        let mut extra_dir = entries(&files, "bundle-x", str::to_string);
        extra_dir.insert(3, ("bundle-x/".into(), b'5', &b""[..]));
        refused_as_archive(&tar_with(&extra_dir, &END), "the directory twice");
        let mut other_dir = entries(&files, "bundle-x", str::to_string);
        other_dir.insert(3, ("other/".into(), b'5', &b""[..]));
        refused_as_archive(&tar_with(&other_dir, &END), "a second directory");
        let mut no_dir = entries(&files, "bundle-x", str::to_string);
        no_dir.remove(0);
        refused_as_archive(&tar_with(&no_dir, &END), "no directory entry");
        let mut dir_last = entries(&files, "bundle-x", str::to_string);
        let dir = dir_last.remove(0);
        dir_last.push(dir);
        refused_as_archive(&tar_with(&dir_last, &END), "the directory after the files");
        for dir in [".", "..", "a/b", ""] {
            refused_as_archive(
                &tar_with(&entries(&files, dir, str::to_string), &END),
                &format!("directory {dir:?}"),
            );
        }
        let mut twice = entries(&files, "bundle-x", str::to_string);
        twice.push(twice[1].clone());
        refused_as_archive(&tar_with(&twice, &END), "a file twice");

        // Any order of the files, as `tar -cf` lists a directory.
        let mut reversed = entries(&files, "bundle-x", str::to_string);
        reversed[1..].reverse();
        assert_eq!(from_tar(&tar_with(&reversed, &END)).unwrap(), files);
    }

    #[test]
    fn only_posix_ustar_headers_without_a_name_prefix_are_read() {
        let files = sample();
        let tar = to_tar(&files, "bundle-x");
        let rewrite = |at: usize, change: &dyn Fn(&mut [u8])| {
            let mut t = tar.clone();
            change(&mut t[at..at + BLOCK]);
            let sum = checksum(&t[at..at + BLOCK]);
            t[at + 148..at + 154].copy_from_slice(format!("{sum:06o}").as_bytes());
            t
        };
        // GNU tar's own format: "ustar  \0".
        refused_as_archive(
            &rewrite(BLOCK, &|h| h[257..265].copy_from_slice(b"ustar  \0")),
            "a GNU header",
        );
        refused_as_archive(&rewrite(0, &|h| h[257..265].fill(0)), "an old-style header");
        // `tar` reads the name as "evil/bundle-x/manifest.json".
        refused_as_archive(
            &rewrite(BLOCK, &|h| h[345..349].copy_from_slice(b"evil")),
            "a name prefix",
        );
        refused_as_archive(&rewrite(BLOCK, &|h| h[156] = b'1'), "a hard link");
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
