//! The shell's disk and randomness commands: `ls`, `cat NAME`, `write NAME TEXT...`, `sum NAME`
//! and `random`. They run in the shell's own process (they need the rest of the line, which `spawn`
//! cannot pass) and do their work with system calls: the kernel keeps the files in a tar
//! archive on a virtio disk (src/kernel/tar.rs) and takes randomness from a virtio entropy
//! device (src/kernel/random.rs).

use crate::abi::{
    ERROR_BAD_ARCHIVE, ERROR_INVALID, ERROR_IO, ERROR_NO_DEVICE, ERROR_NO_ENTRY, ERROR_NO_SPACE,
    ERROR_READ_ONLY, FileInfo, NAME_MAX,
};
use crate::io::{LINE_MAX, Out};
use crate::sys;

/// How many files `ls` shows.
const LS_MAX: usize = 32;

/// `ls`: one line per file, its size in bytes and its name.
pub fn ls() {
    let mut records = [FileInfo {
        size: 0,
        name_length: 0,
        name: [0; NAME_MAX],
    }; LS_MAX];
    let count = sys::list(&mut records);
    if count < 0 {
        return complain(b"ls", count, b"");
    }
    let mut out = Out::new();
    if count == 0 {
        out.s(b"ls: no files yet (write NAME TEXT makes one)\n");
    }
    for record in &records[..(count as usize).min(LS_MAX)] {
        let shown = (record.name_length as usize).min(NAME_MAX);
        out.u_right(record.size, 8)
            .s(b"  ")
            .s(&record.name[..shown]);
        if shown < record.name_length as usize {
            out.s(b"...");
        }
        out.s(b"\n");
    }
    if count as usize > LS_MAX {
        out.s(b"ls: more than ")
            .u(LS_MAX as u64)
            .s(b" files: only the first ")
            .u(LS_MAX as u64)
            .s(b" are shown\n");
    }
}

/// `cat NAME`: the file's bytes, as they are.
pub fn cat(arguments: &[u8]) {
    let name = trim(arguments);
    if name.is_empty() || name.contains(&b' ') {
        Out::new().s(b"cat: usage: cat NAME\n");
        return;
    }
    let mut buffer = [0u8; 1024];
    let mut offset = 0;
    loop {
        let n = sys::read_file(name, &mut buffer, offset);
        if n < 0 {
            return complain(b"cat", n, name);
        }
        if n == 0 {
            return;
        }
        sys::write(&buffer[..n as usize]);
        offset += n as u64;
    }
}

/// `write NAME TEXT...`: the file NAME holds the rest of the line and a newline (a new version
/// of it, if it was there already).
pub fn write(arguments: &[u8], truncated: bool) {
    // The name is the first word; the text starts at the next word and keeps the rest of the
    // line as it is (spaces inside and at the end included).
    let arguments = skip_spaces(arguments);
    let (name, text) = match arguments.iter().position(|&byte| byte == b' ') {
        Some(space) => (&arguments[..space], skip_spaces(&arguments[space..])),
        None => (arguments, &b""[..]),
    };
    if name.is_empty() {
        Out::new().s(b"write: usage: write NAME TEXT...\n");
        return;
    }
    if truncated {
        Out::new()
            .s(b"write: the line is longer than ")
            .u(LINE_MAX as u64)
            .s(b" characters: nothing written\n");
        return;
    }
    let mut content = [0u8; LINE_MAX + 1];
    content[..text.len()].copy_from_slice(text);
    content[text.len()] = b'\n';
    let n = sys::write_file(name, &content[..text.len() + 1]);
    if n < 0 {
        return complain(b"write", n, name);
    }
    Out::new()
        .s(b"wrote ")
        .i(n)
        .s(b" bytes to ")
        .s(name)
        .s(b"\n");
}

/// How much `sum` asks for per `read_file`: 64 KiB, the kernel's per-request size (tar.rs), so
/// each call is one data request.
const SUM_CHUNK: usize = 64 * 1024;

/// `sum`'s buffer, in the program's .bss: the user stack is only 16 KiB.
struct SumBuffer(core::cell::UnsafeCell<[u8; SUM_CHUNK]>);

// SAFETY: a process has one thread, and only `sum` uses the buffer (never re-entered).
unsafe impl Sync for SumBuffer {}

static SUM_BUFFER: SumBuffer = SumBuffer(core::cell::UnsafeCell::new([0; SUM_CHUNK]));

/// `sum NAME`: reads the whole file from start to end, 64 KiB per call, without printing it,
/// and says how much it read, a checksum, how long it took and how many disk requests the
/// kernel made for it:
///
/// `NAME: BYTES bytes, checksum 0x0123456789abcdef, MS ms, REQUESTS disk requests`
///
/// The checksum is the sum (mod 2^64) of the file's little-endian 64-bit words, the last one
/// padded with zeros: one `add` per 8 bytes, where every guest instruction may be emulated.
pub fn sum(arguments: &[u8]) {
    let name = trim(arguments);
    if name.is_empty() || name.contains(&b' ') {
        Out::new().s(b"sum: usage: sum NAME\n");
        return;
    }
    // SAFETY: see SumBuffer: nobody else holds a reference to it.
    let buffer = unsafe { &mut *SUM_BUFFER.0.get() };
    let requests = sys::disk_requests();
    let started = sys::uptime_ms();
    let (mut total, mut checksum) = (0u64, 0u64);
    loop {
        let n = sys::read_file(name, buffer, total);
        if n < 0 {
            return complain(b"sum", n, name);
        }
        if n == 0 {
            break;
        }
        // Every read but the last is 64 KiB, a whole number of words: the words line up.
        checksum = checksum.wrapping_add(add_words(&buffer[..n as usize]));
        total += n as u64;
    }
    let elapsed = sys::uptime_ms() - started;
    let requests = sys::disk_requests() - requests;
    Out::new()
        .s(name)
        .s(b": ")
        .u(total)
        .s(b" bytes, checksum ")
        .hex(checksum)
        .s(b", ")
        .u(elapsed)
        .s(b" ms, ")
        .u(requests)
        .s(if requests == 1 {
            b" disk request\n"
        } else {
            b" disk requests\n"
        });
}

/// The sum (mod 2^64) of `bytes` as little-endian 64-bit words, a last partial word padded
/// with zeros. Eight words per turn of the loop: fewer loop instructions to emulate.
fn add_words(bytes: &[u8]) -> u64 {
    let word = |chunk: &[u8]| u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
    let mut blocks = bytes.chunks_exact(64);
    let mut sum = 0u64;
    for block in &mut blocks {
        for i in 0..8 {
            sum = sum.wrapping_add(word(&block[i * 8..i * 8 + 8]));
        }
    }
    let mut words = blocks.remainder().chunks_exact(8);
    for chunk in &mut words {
        sum = sum.wrapping_add(word(chunk));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        sum = sum.wrapping_add(u64::from_le_bytes(last));
    }
    sum
}

/// `random`: 16 bytes from the entropy device, in hex.
pub fn random() {
    let mut bytes = [0u8; 16];
    let n = sys::random(&mut bytes);
    let mut out = Out::new();
    match n {
        16 => {
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            for byte in bytes {
                let digits = [
                    DIGITS[usize::from(byte >> 4)],
                    DIGITS[usize::from(byte & 15)],
                ];
                out.s(&digits);
            }
            out.s(b"\n");
        }
        ERROR_NO_DEVICE => {
            out.s(b"random: no entropy device: start mini-kvm with --rng\n");
        }
        _ => {
            out.s(b"random: the entropy device failed\n");
        }
    }
}

/// What went wrong, and what to do about it.
fn complain(command: &[u8], error: i64, name: &[u8]) {
    let mut out = Out::new();
    out.s(command).s(b": ");
    match error {
        ERROR_NO_DEVICE => out.s(b"no disk: start mini-kvm with --disk FILE"),
        ERROR_NO_ENTRY => out.s(b"no such file: ").s(name),
        ERROR_READ_ONLY => out.s(b"the disk is read-only"),
        ERROR_NO_SPACE => out.s(b"the disk is full"),
        ERROR_INVALID => out.s(b"bad file name: ").s(name).s(b" (1 to 100 bytes)"),
        ERROR_BAD_ARCHIVE => out.s(
            b"the disk is not a tar archive: give mini-kvm a zeroed file or one made with \
              tar --format=ustar",
        ),
        ERROR_IO => out.s(b"the disk failed (I/O error)"),
        other => out.s(b"error ").i(other),
    };
    out.s(b"\n");
}

/// `text` without the spaces it starts with.
fn skip_spaces(mut text: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = text {
        text = rest;
    }
    text
}

/// `text` without spaces at either end.
fn trim(text: &[u8]) -> &[u8] {
    let mut text = skip_spaces(text);
    while let [rest @ .., b' '] = text {
        text = rest;
    }
    text
}
