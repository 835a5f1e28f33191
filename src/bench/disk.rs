//! virtio-blk: the teaching OS reads a whole file from its disk (`sum NAME`, guests/os
//! src/user/files.rs) while the host reads the same bytes of the same image with `pread`, and
//! `--stats` counts the VM exits that the reading cost.
//!
//! The disk is a ustar archive made here, holding one file `big` of deterministic
//! pseudo-random bytes. `sum` prints how many bytes it read, a checksum (the sum mod 2^64 of the
//! file's little-endian 64-bit words), the milliseconds it took (the OS's own clock) and how many
//! virtio-blk requests the kernel made. Bytes and checksum are checked against the file: a guest
//! that read something else is a bench error, not a figure.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::measure::{Sample, spawn_fed};
use super::report::{Figure, Row};
use super::{BenchError, mini_kvm};
use crate::arch::x86::layout::VIRTIO_MMIO_START;
use crate::loader::builtin_guest;

const GROUP: &str = "virtio-blk";
const FILE_NAME: &str = "big";
/// The teaching OS's per-request size (guests/os/src/kernel/tar.rs, BUFFER_SIZE) and `sum`'s
/// per-call size: the host reads in the same chunks.
const CHUNK: usize = 64 * 1024;
const MIB: usize = 1024 * 1024;
const SECTOR: usize = 512;
/// The disk's InterruptStatus register (slot 0): the OS's interrupt handler reads it once per
/// interrupt, so its reads count the disk's interrupts.
const INTERRUPT_STATUS: u64 = VIRTIO_MMIO_START + 0x60;

/// The virtio-blk rows: `runs` sessions of `sum` on a file of 8 MiB (1 MiB when `quick`).
pub fn virtio_blk(
    exe: &Path,
    dir: &Path,
    runs: usize,
    quick: bool,
) -> Result<Vec<Row>, BenchError> {
    let mib = if quick { 1 } else { 8 };
    let read_name = format!("sequential read in the teaching OS (sum, {mib} MiB)");
    let host_name = format!("host pread of the same file, {} KiB chunks", CHUNK / 1024);
    let exits_name = "VM exits per disk request";
    let interrupts_name = "disk interrupts per request";
    if builtin_guest("os").is_none() {
        let missing = || -> Figure { Err("no `os` guest in this build".into()) };
        return Ok(vec![
            Row::new(GROUP, read_name, "MiB/s", missing()).against(host_name, missing()),
            Row::new(GROUP, exits_name, "exits", missing()),
            Row::new(GROUP, interrupts_name, "", missing()),
        ]);
    }

    let data = pseudo_random(mib * MIB);
    let (expected_bytes, expected_checksum) = (data.len() as u64, checksum(&data));
    let image = dir.join("virtio-blk.tar");
    std::fs::write(&image, ustar(FILE_NAME, &data))?;
    drop(data);
    let disk = format!(
        "{},ro",
        image
            .to_str()
            .expect("Programs::write checked the path is UTF-8")
    );
    let session = |input: &str| -> Result<Session, BenchError> {
        let mut command = mini_kvm(
            exe,
            &["run", "--timeout", "300", "--disk", &disk, "--stats", "os"],
        );
        run_session(&mut command, input)
    };

    // The baseline session types a line of the same length that reads nothing (`sum` with a
    // blank name prints its usage line): what remains of the difference is the disk's.
    let quiet = format!("sum {}\n0\n", " ".repeat(FILE_NAME.len()));
    let baseline: Vec<Session> = (0..runs.clamp(1, 3))
        .map(|_| session(&quiet))
        .collect::<Result<_, _>>()?;
    let baseline_exits = Sample::of(baseline.iter().map(|s| s.exits as f64).collect()).median;
    let baseline_interrupts =
        Sample::of(baseline.iter().map(|s| s.interrupts as f64).collect()).median;

    let (mut speeds, mut exits, mut interrupts) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        let run = session(&format!("sum {FILE_NAME}\n0\n"))?;
        let summed = run.summed.ok_or_else(|| {
            BenchError::Guest(format!(
                "the teaching OS printed no `{FILE_NAME}: ...` line for `sum {FILE_NAME}`:\n{}",
                run.stdout
            ))
        })?;
        if (summed.bytes, summed.checksum) != (expected_bytes, expected_checksum) {
            return Err(BenchError::Guest(format!(
                "`sum {FILE_NAME}` in the teaching OS read {} bytes with checksum {:#018x}; the \
                 file has {} bytes with checksum {:#018x}",
                summed.bytes, summed.checksum, expected_bytes, expected_checksum
            )));
        }
        if summed.requests == 0 {
            return Err(BenchError::Guest(format!(
                "`sum {FILE_NAME}` reported 0 disk requests"
            )));
        }
        // The OS's clock ticks every 10 ms: a read shorter than a tick reads as 0 ms.
        let ms = summed.ms.max(10) as f64;
        speeds.push(summed.bytes as f64 / MIB as f64 / (ms / 1e3));
        let requests = summed.requests as f64;
        exits.push((run.exits as f64 - baseline_exits).max(0.0) / requests);
        interrupts.push((run.interrupts as f64 - baseline_interrupts).max(0.0) / requests);
    }

    let host = host_pread(&image, mib * MIB, runs, expected_checksum)?;
    Ok(vec![
        Row::new(GROUP, read_name, "MiB/s", Ok(Sample::of(speeds))).against(host_name, Ok(host)),
        Row::new(GROUP, exits_name, "exits", Ok(Sample::of(exits))),
        Row::new(GROUP, interrupts_name, "", Ok(Sample::of(interrupts))),
    ])
}

/// What `sum` printed.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Summed {
    bytes: u64,
    checksum: u64,
    ms: u64,
    requests: u64,
}

/// One `mini-kvm run ... --stats os` session.
struct Session {
    stdout: String,
    summed: Option<Summed>,
    /// All VM exits (the `--stats` table's first line).
    exits: u64,
    /// Reads of the disk's InterruptStatus register: one per interrupt.
    interrupts: u64,
}

fn run_session(command: &mut Command, input: &str) -> Result<Session, BenchError> {
    let describe = format!("{command:?}");
    let (child, feeder) = spawn_fed(command.stderr(Stdio::piped()), input.as_bytes())?;
    let output = child
        .wait_with_output()
        .map_err(|source| BenchError::Wait {
            command: describe.clone(),
            source,
        })?;
    let _ = feeder.join();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        return Err(BenchError::Guest(format!(
            "{describe} ended with {}: {stderr}",
            output.status
        )));
    }
    let exits = total_exits(&stderr).ok_or_else(|| {
        BenchError::Guest(format!("{describe} printed no --stats table: {stderr}"))
    })?;
    Ok(Session {
        summed: stdout.lines().find_map(sum_line),
        interrupts: accesses(&stderr, INTERRUPT_STATUS, "read"),
        exits,
        stdout,
    })
}

/// `big: 8388608 bytes, checksum 0x0123456789abcdef, 2310 ms, 386 disk requests`.
fn sum_line(line: &str) -> Option<Summed> {
    let rest = line.strip_prefix(FILE_NAME)?.strip_prefix(": ")?;
    let (bytes, rest) = rest.split_once(" bytes, checksum 0x")?;
    let (checksum, rest) = rest.split_once(", ")?;
    let (ms, rest) = rest.split_once(" ms, ")?;
    let requests = rest
        .strip_suffix(" disk requests")
        .or_else(|| rest.strip_suffix(" disk request"))?;
    Some(Summed {
        bytes: bytes.parse().ok()?,
        checksum: u64::from_str_radix(checksum, 16).ok()?,
        ms: ms.parse().ok()?,
        requests: requests.parse().ok()?,
    })
}

/// `VM exits of 'os': N`, the first line of the `--stats` table (src/vmm/stats.rs).
fn total_exits(stats: &str) -> Option<u64> {
    stats
        .lines()
        .find_map(|line| line.strip_prefix("VM exits of '")?.split_once("': "))
        .and_then(|(_, count)| count.trim().parse().ok())
}

/// The count on the table's `by port` line for `address` and `direction` (0 if none).
fn accesses(stats: &str, address: u64, direction: &str) -> u64 {
    let place = format!("{address:#x} {direction}");
    stats
        .lines()
        .find_map(|line| {
            let rest = line.trim_start().strip_prefix(&place)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// The host reads the file's bytes from the same image, in the guest's chunk size, `runs`
/// times after one read that puts them in the page cache (the guest's reads come from there
/// too): MiB/s of each.
fn host_pread(
    image: &Path,
    length: usize,
    runs: usize,
    expected: u64,
) -> Result<Sample, BenchError> {
    let file = std::fs::File::open(image)?;
    let mut buffer = vec![0u8; CHUNK];
    let mut read_all = || -> Result<u64, BenchError> {
        let mut sum = 0u64;
        let mut done = 0;
        while done < length {
            let take = CHUNK.min(length - done);
            // The file's data starts after its 512-byte header.
            file.read_exact_at(&mut buffer[..take], (SECTOR + done) as u64)?;
            sum = sum.wrapping_add(std::hint::black_box(buffer[take - 1]) as u64);
            done += take;
        }
        Ok(sum)
    };
    read_all()?;
    let sample = Sample::repeat(runs, || {
        let started = Instant::now();
        read_all()?;
        Ok(length as f64 / MIB as f64 / started.elapsed().as_secs_f64())
    })?;
    // The same bytes the guest summed (a check on the image, outside the timing).
    let data = std::fs::read(image)?;
    if checksum(&data[SECTOR..SECTOR + length]) != expected {
        return Err(BenchError::Setup(
            "the virtio-blk image changed under the bench",
        ));
    }
    Ok(sample)
}

/// `length` bytes from xorshift64*: the same every run.
fn pseudo_random(length: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut data = Vec::with_capacity(length + 8);
    while data.len() < length {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        data.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    data.truncate(length);
    data
}

/// `sum`'s checksum: the sum (mod 2^64) of the little-endian 64-bit words, the last one padded
/// with zeros.
pub fn checksum(data: &[u8]) -> u64 {
    data.chunks(8)
        .map(|chunk| {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            u64::from_le_bytes(word)
        })
        .fold(0, u64::wrapping_add)
}

/// A ustar archive of one regular file, `name` (at most 100 bytes) holding `data`, ended by
/// two zero blocks.
fn ustar(name: &str, data: &[u8]) -> Vec<u8> {
    let mut header = [0u8; SECTOR];
    header[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |field: &mut [u8], value: u64| {
        let digits = field.len() - 1;
        let text = format!("{value:0digits$o}");
        field[..digits].copy_from_slice(text.as_bytes());
    };
    octal(&mut header[100..108], 0o644); // mode
    octal(&mut header[108..116], 0); // uid
    octal(&mut header[116..124], 0); // gid
    octal(&mut header[124..136], data.len() as u64); // size
    octal(&mut header[136..148], 0); // mtime
    header[156] = b'0'; // a regular file
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].fill(b' ');
    let sum: u64 = header.iter().map(|&b| u64::from(b)).sum();
    // Six digits, NUL, space: how tar writes it.
    octal(&mut header[148..155], sum);
    header[154] = 0;
    header[155] = b' ';
    let mut image = header.to_vec();
    image.extend_from_slice(data);
    image.resize(image.len().next_multiple_of(SECTOR) + 2 * SECTOR, 0);
    image
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sum_line_is_parsed_and_anything_else_is_not() {
        assert_eq!(
            sum_line("big: 8388608 bytes, checksum 0x00000000000000ff, 2310 ms, 386 disk requests"),
            Some(Summed {
                bytes: 8388608,
                checksum: 255,
                ms: 2310,
                requests: 386
            })
        );
        assert_eq!(
            sum_line("big: 13 bytes, checksum 0x00000000000000ff, 0 ms, 1 disk request")
                .map(|summed| summed.requests),
            Some(1)
        );
        assert_eq!(sum_line("Select: sum big"), None);
        assert_eq!(sum_line("sum: no such file: big"), None);
    }

    #[test]
    fn the_stats_table_is_read() {
        let stats = "VM exits of 'os': 359\n  host KVM: kvm_pvm\n  by port   exits  device\n  \
                     0xd0000060 read             132  virtio-blk\n  0xd0000064 write   132  virtio-blk\n";
        assert_eq!(total_exits(stats), Some(359));
        assert_eq!(accesses(stats, INTERRUPT_STATUS, "read"), 132);
        assert_eq!(accesses(stats, INTERRUPT_STATUS, "write"), 0);
    }

    #[test]
    fn the_checksum_pads_the_last_word_with_zeros() {
        assert_eq!(checksum(&[1, 0, 0, 0, 0, 0, 0, 0, 2]), 3);
        assert_eq!(checksum(&[0xff; 16]), u64::MAX.wrapping_add(u64::MAX));
    }

    #[test]
    fn the_archive_is_one_ustar_file_and_two_zero_blocks() {
        let image = ustar("big", &[7u8; 1000]);
        assert_eq!(image.len(), 512 + 1024 + 1024);
        assert_eq!(&image[..4], b"big\0");
        assert_eq!(&image[124..136], b"00000001750\0");
        assert!(image[512..1512].iter().all(|&b| b == 7));
        assert!(image[1512..].iter().all(|&b| b == 0));
    }
}
