//! The file system: the disk holds a tar archive (POSIX ustar), as in the original "OS in
//! 1,000 lines". The host makes and reads it with `tar`; the OS lists, reads and appends.
//!
//! A tar archive is a row of 512-byte blocks (one disk sector each). Every file is a header
//! block (name, size, and more, as text: sizes in octal) followed by its data, padded to whole
//! blocks. Two zero blocks end the archive; an all-zero disk is an empty archive.
//!
//! ```text
//!   block 0      1..3          4          5        6       7
//!   [header a] [a's data...] [header b] [b data] [zeros] [zeros] ...
//! ```
//!
//! There is no directory and no free list: to find a file, walk the headers from block 0. To
//! write one, append it where the end was; a file written again is appended again, and the last
//! entry with a name is the file (so `tar -x` on the host gets the newest version too).

use crate::abi::{
    ERROR_BAD_ARCHIVE, ERROR_NO_DEVICE, ERROR_NO_ENTRY, ERROR_NO_SPACE, ERROR_READ_ONLY, FileInfo,
    NAME_MAX,
};
use crate::cell::KernelCell;
use crate::disk::{self, SECTOR_SIZE};

const BLOCK: usize = SECTOR_SIZE;
/// Data moves through this buffer, 8 blocks at a time (one disk request each).
const BUFFER_SIZE: usize = 64 * 1024;

#[repr(C, align(4096))]
struct Buffer([u8; BUFFER_SIZE]);

/// Headers are read into HEADER, data into DATA: kernel memory, which the disk can reach.
static HEADER: KernelCell<[u8; BLOCK]> = KernelCell::new([0; BLOCK]);
static DATA: KernelCell<Buffer> = KernelCell::new(Buffer([0; BUFFER_SIZE]));

/// The last file `read` found: its name, where its data starts, its size. A program reads a
/// file in pieces (`cat` 1 KiB, `sum` 64 KiB at a time), and without this every piece would walk
/// the archive's headers again: one disk request per header. Forgotten at every write, which
/// may add a newer version of any file.
struct Found {
    name: [u8; 256],
    name_length: usize,
    data: u64,
    size: u64,
}

static LAST_FOUND: KernelCell<Option<Found>> = KernelCell::new(None);

// Where the fields of a ustar header are (offset, length); all text, numbers in octal.
const NAME: (usize, usize) = (0, 100);
const MODE: (usize, usize) = (100, 8);
const UID: (usize, usize) = (108, 8);
const GID: (usize, usize) = (116, 8);
const SIZE: (usize, usize) = (124, 12);
const MTIME: (usize, usize) = (136, 12);
const CHECKSUM: (usize, usize) = (148, 8);
const TYPE: usize = 156;
const MAGIC: (usize, usize) = (257, 6);
const VERSION: (usize, usize) = (263, 2);
/// A name longer than 100 bytes is split: its start here, then '/', then the name field.
const PREFIX: (usize, usize) = (345, 155);

fn field(header: &[u8; BLOCK], (offset, length): (usize, usize)) -> &[u8] {
    &header[offset..offset + length]
}

/// One entry of the archive.
struct Entry {
    name: [u8; 256],
    name_length: usize,
    size: u64,
    /// A regular file (type '0', or NUL in old archives); directories, links... are skipped.
    regular: bool,
    /// The block where its data starts.
    data: u64,
}

impl Entry {
    fn name(&self) -> &[u8] {
        &self.name[..self.name_length]
    }
}

/// A number in octal text, as tar writes it: spaces first, then digits, then NUL or space.
fn octal(text: &[u8]) -> Option<u64> {
    let mut value: u64 = 0;
    let digits = text.iter().skip_while(|&&byte| byte == b' ');
    for &byte in digits.take_while(|&&byte| byte != 0 && byte != b' ') {
        if !(b'0'..=b'7').contains(&byte) {
            return None; // (GNU tar's base-256 for huge sizes included: not supported)
        }
        value = value.checked_mul(8)? + u64::from(byte - b'0');
    }
    Some(value)
}

/// Writes `value` as zero-padded octal digits in all of `text` but its last byte, a NUL.
fn put_octal(text: &mut [u8], mut value: u64) {
    let digits = text.len() - 1;
    for i in (0..digits).rev() {
        text[i] = b'0' + (value & 7) as u8;
        value >>= 3;
    }
    text[digits] = 0;
}

/// The header's checksum: the sum of its bytes, the checksum field counted as 8 spaces. (Some
/// old tars summed signed bytes: both are accepted when reading.)
fn checksums(header: &[u8]) -> (u64, u64) {
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &byte) in header.iter().enumerate() {
        let byte = if (CHECKSUM.0..CHECKSUM.0 + CHECKSUM.1).contains(&i) {
            b' '
        } else {
            byte
        };
        unsigned += u64::from(byte);
        signed += i64::from(byte as i8);
    }
    (unsigned, signed as u64)
}

fn parse(header: &[u8; BLOCK], block: u64) -> Result<Entry, i64> {
    let stored = octal(field(header, CHECKSUM)).ok_or(ERROR_BAD_ARCHIVE)?;
    let (unsigned, signed) = checksums(header);
    if stored != unsigned && stored != signed {
        return Err(ERROR_BAD_ARCHIVE);
    }
    let size = octal(field(header, SIZE)).ok_or(ERROR_BAD_ARCHIVE)?;
    let mut entry = Entry {
        name: [0; 256],
        name_length: 0,
        size,
        regular: matches!(header[TYPE], b'0' | 0),
        data: block + 1,
    };
    let until_nul = |text: &[u8]| text.iter().position(|&b| b == 0).unwrap_or(text.len());
    let prefix = field(header, PREFIX);
    let prefix = &prefix[..until_nul(prefix)];
    let name = field(header, NAME);
    let name = &name[..until_nul(name)];
    let mut length = 0;
    if !prefix.is_empty() {
        entry.name[..prefix.len()].copy_from_slice(prefix);
        entry.name[prefix.len()] = b'/';
        length = prefix.len() + 1;
    }
    entry.name[length..length + name.len()].copy_from_slice(name);
    entry.name_length = length + name.len();
    Ok(entry)
}

/// Walks the archive from block 0, calling `visit` for every entry. Returns the block where the
/// archive ends: its first zero block (where the next file goes), or the end of the disk.
fn walk(mut visit: impl FnMut(&Entry) -> Result<(), i64>) -> Result<u64, i64> {
    let (_, sectors, _) = disk::info().ok_or(ERROR_NO_DEVICE)?;
    let header = HEADER.get();
    let mut block = 0;
    while block < sectors {
        disk::read(block, header)?;
        if header.iter().all(|&byte| byte == 0) {
            return Ok(block);
        }
        let entry = parse(header, block)?;
        let next = entry.data + entry.size.div_ceil(BLOCK as u64);
        if next > sectors {
            return Err(ERROR_BAD_ARCHIVE); // a file said to go on past the end of the disk
        }
        visit(&entry)?;
        block = next;
    }
    Ok(sectors)
}

/// Fills up to `capacity` records at `records` (writable user memory, checked) with the files,
/// each name once with the size of its last version, in the order they first appear. Returns
/// how many, or `capacity + 1` if there were more files than that.
pub fn list(records: *mut FileInfo, capacity: usize) -> Result<usize, i64> {
    let (mut count, mut more) = (0, false);
    walk(|entry| {
        if !entry.regular {
            return Ok(());
        }
        let mut name = [0; NAME_MAX];
        let shown = entry.name_length.min(NAME_MAX);
        name[..shown].copy_from_slice(&entry.name[..shown]);
        for i in 0..count {
            // SAFETY: i < count <= capacity: inside the checked range. Unaligned: the process
            // chose the address.
            let mut record = unsafe { records.add(i).read_unaligned() };
            if record.name_length == entry.name_length as u64 && record.name == name {
                record.size = entry.size;
                unsafe { records.add(i).write_unaligned(record) };
                return Ok(());
            }
        }
        if count == capacity {
            more = true;
        } else {
            let record = FileInfo {
                size: entry.size,
                name_length: entry.name_length as u64,
                name,
            };
            unsafe { records.add(count).write_unaligned(record) };
            count += 1;
        }
        Ok(())
    })?;
    Ok(if more { capacity + 1 } else { count })
}

/// Reads up to `capacity` bytes of the file `name`, from `offset` on, into `buffer` (writable
/// user memory, checked). Returns how many (0 at the end of the file).
pub fn read(name: &[u8], buffer: u64, capacity: u64, offset: u64) -> Result<u64, i64> {
    let (data, size) = find(name)?;
    let length = capacity.min(size.saturating_sub(offset));
    let buf = &mut DATA.get().0;
    let mut done = 0;
    while done < length {
        let position = offset + done;
        let within = (position % BLOCK as u64) as usize;
        let wanted = (length - done) as usize;
        let blocks = (within + wanted).div_ceil(BLOCK).min(BUFFER_SIZE / BLOCK);
        disk::read(data + position / BLOCK as u64, &mut buf[..blocks * BLOCK])?;
        let take = wanted.min(blocks * BLOCK - within);
        // SAFETY: inside the checked user buffer (done + take <= length <= capacity).
        unsafe {
            core::ptr::copy_nonoverlapping(
                buf[within..].as_ptr(),
                (buffer + done) as *mut u8,
                take,
            );
        }
        done += take as u64;
    }
    Ok(length)
}

/// Where the file `name`'s data starts and how long it is: from [`LAST_FOUND`], or by walking
/// the archive (the last entry with the name wins).
fn find(name: &[u8]) -> Result<(u64, u64), i64> {
    if let Some(last) = LAST_FOUND.get().as_ref()
        && &last.name[..last.name_length] == name
    {
        return Ok((last.data, last.size));
    }
    let mut found = None;
    walk(|entry| {
        if entry.regular && entry.name() == name {
            found = Some((entry.data, entry.size)); // a later one replaces it: the last wins
        }
        Ok(())
    })?;
    let (data, size) = found.ok_or(ERROR_NO_ENTRY)?;
    let mut remembered = Found {
        name: [0; 256],
        name_length: name.len(),
        data,
        size,
    };
    remembered.name[..name.len()].copy_from_slice(name);
    *LAST_FOUND.get() = Some(remembered);
    Ok((data, size))
}

/// Appends the file `name` with the `length` bytes at `data` (user memory, checked). The data
/// and the new end go first, the header last: if the machine stops halfway, the archive still
/// ends where it did, without the new file.
pub fn write(name: &[u8], data: u64, length: u64) -> Result<u64, i64> {
    // Whatever happens below, the archive may change: what `read` remembered may be old.
    *LAST_FOUND.get() = None;
    let (_, sectors, read_only) = disk::info().ok_or(ERROR_NO_DEVICE)?;
    if read_only {
        return Err(ERROR_READ_ONLY);
    }
    let end = walk(|_| Ok(()))?;
    let data_blocks = length.div_ceil(BLOCK as u64);
    // The header, the data, and the two zero blocks that end the archive.
    if end
        .checked_add(1 + data_blocks + 2)
        .is_none_or(|needed| needed > sectors)
    {
        return Err(ERROR_NO_SPACE);
    }
    let buf = &mut DATA.get().0;
    let mut done = 0;
    while done < length {
        let take = (length - done).min(BUFFER_SIZE as u64) as usize;
        let blocks = take.div_ceil(BLOCK);
        // The last block's tail stays zero: tar pads with zeros.
        buf[..blocks * BLOCK].fill(0);
        // SAFETY: inside the checked user range.
        unsafe {
            core::ptr::copy_nonoverlapping((data + done) as *const u8, buf.as_mut_ptr(), take)
        };
        disk::write(end + 1 + done / BLOCK as u64, &buf[..blocks * BLOCK])?;
        done += take as u64;
    }
    buf[..2 * BLOCK].fill(0);
    disk::write(end + 1 + data_blocks, &buf[..2 * BLOCK])?;
    make_header(&mut buf[..BLOCK], name, length);
    disk::write(end, &buf[..BLOCK])?;
    Ok(length)
}

/// A ustar header for a regular file: `name` (1 to 100 bytes), `size`, mode 644, owner 0,
/// time 0 (the OS has no clock of the date).
fn make_header(header: &mut [u8], name: &[u8], size: u64) {
    header.fill(0);
    header[..name.len()].copy_from_slice(name);
    for ((offset, length), value) in [(MODE, 0o644), (UID, 0), (GID, 0), (SIZE, size), (MTIME, 0)] {
        put_octal(&mut header[offset..offset + length], value);
    }
    header[TYPE] = b'0';
    header[MAGIC.0..MAGIC.0 + MAGIC.1].copy_from_slice(b"ustar\0");
    header[VERSION.0..VERSION.0 + VERSION.1].copy_from_slice(b"00");
    let (sum, _) = checksums(header);
    // Six digits, NUL, space: how tar writes it.
    put_octal(&mut header[CHECKSUM.0..CHECKSUM.0 + 7], sum);
    header[CHECKSUM.0 + 7] = b' ';
}
