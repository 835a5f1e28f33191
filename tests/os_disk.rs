//! The teaching OS with virtio devices (`mini-kvm run --disk FILE --rng os`): files it writes
//! are a tar archive the host's `tar` reads, archives made by the host's `tar` are files it
//! reads, a read-only disk stays unchanged byte for byte, a full disk says so, and `random`
//! takes its bytes from the entropy device. Whole transcripts, as in tests/os.rs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use mini_kvm::bench::disk::checksum;

use common::os::{GOODBYE, MENU, assert_session, transcript};
use common::{Run, mini_kvm, require_kvm, scratch};

const NO_DISK: &str = "no disk: start mini-kvm with --disk FILE\n";

/// Runs the OS with these extra `mini-kvm run` options and `input` on stdin.
fn os(options: &[&str], input: &str) -> Run {
    require_kvm();
    let mut args = vec!["run", "--timeout", "60"];
    args.extend_from_slice(options);
    args.push("os");
    mini_kvm(&args, input.as_bytes())
}

/// Runs the OS with `disk` (and `,ro` if `read_only`).
fn os_with_disk(disk: &Path, read_only: bool, input: &str) -> Run {
    let mut option = disk.to_str().unwrap().to_string();
    if read_only {
        option.push_str(",ro");
    }
    os(&["--disk", &option], input)
}

/// The lines typed in `steps`, as stdin.
fn typed(steps: &[(&str, &str)]) -> String {
    steps.iter().map(|(line, _)| format!("{line}\n")).collect()
}

/// A session of `steps` with these options: its whole transcript must match.
fn session(options: &[&str], steps: &[(&str, &str)]) {
    let run = os(options, &typed(steps));
    assert_session(&run, &transcript(steps));
}

fn session_with_disk(disk: &Path, read_only: bool, steps: &[(&str, &str)]) {
    let run = os_with_disk(disk, read_only, &typed(steps));
    assert_session(&run, &transcript(steps));
}

/// A zeroed image of `size` bytes: an empty tar archive.
fn zeroed_image(dir: &Path, size: u64) -> PathBuf {
    let path = dir.join("disk.img");
    std::fs::File::create(&path).unwrap().set_len(size).unwrap();
    path
}

/// The regular files of a ustar archive, (name, data) in order, parsed here without `tar`, and
/// checked as strictly as the format asks: magic, version, checksum, octal fields.
fn tar_entries(image: &[u8]) -> Vec<(String, Vec<u8>)> {
    let octal = |field: &[u8]| {
        let text = std::str::from_utf8(field).unwrap();
        u64::from_str_radix(text.trim_matches(|c| c == '\0' || c == ' '), 8).unwrap()
    };
    let mut entries = Vec::new();
    let mut block = 0;
    loop {
        let header = &image[block * 512..(block + 1) * 512];
        if header.iter().all(|&byte| byte == 0) {
            // The end: two zero blocks.
            assert!(
                image[(block + 1) * 512..(block + 2) * 512]
                    .iter()
                    .all(|&b| b == 0)
            );
            return entries;
        }
        assert_eq!(&header[257..263], b"ustar\0", "magic at block {block}");
        assert_eq!(&header[263..265], b"00", "version at block {block}");
        let sum: u64 = header
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(b)
                }
            })
            .sum();
        assert_eq!(octal(&header[148..156]), sum, "checksum at block {block}");
        let name_end = header[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = String::from_utf8(header[..name_end].to_vec()).unwrap();
        let size = octal(&header[124..136]) as usize;
        assert_eq!(header[156], b'0', "a regular file at block {block}");
        let data = image[(block + 1) * 512..][..size].to_vec();
        entries.push((name, data));
        block += 1 + size.div_ceil(512);
    }
}

/// Runs the host's `tar` with `args`; its stdout.
fn host_tar(args: &[&str], dir: &Path) -> Vec<u8> {
    let output = Command::new("tar")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run the host's tar");
    assert!(output.status.success(), "tar {args:?}: {output:?}");
    output.stdout
}

#[test]
fn a_file_the_os_writes_is_a_tar_file_on_the_host_and_is_there_at_the_next_boot() {
    let dir = scratch("os-disk-write");
    let disk = zeroed_image(&dir, 1 << 20);
    session_with_disk(
        &disk,
        false,
        &[
            ("ls", "ls: no files yet (write NAME TEXT makes one)\n"),
            (
                "write hello.txt Hello, disk!",
                "wrote 13 bytes to hello.txt\n",
            ),
            ("ls", "      13  hello.txt\n"),
        ],
    );
    // The host reads the image as a tar archive: our own parse, and GNU tar's.
    let image = std::fs::read(&disk).unwrap();
    assert_eq!(
        tar_entries(&image),
        vec![("hello.txt".to_string(), b"Hello, disk!\n".to_vec())]
    );
    assert_eq!(host_tar(&["-tf", "disk.img"], &dir), b"hello.txt\n");
    assert_eq!(
        host_tar(&["-xOf", "disk.img", "hello.txt"], &dir),
        b"Hello, disk!\n"
    );
    // A second boot finds it; a new version of it wins, and a second file follows it.
    session_with_disk(
        &disk,
        false,
        &[
            ("cat hello.txt", "Hello, disk!\n"),
            (
                "write hello.txt  again,  with spaces ",
                "wrote 21 bytes to hello.txt\n",
            ),
            ("write b x", "wrote 2 bytes to b\n"),
            ("cat hello.txt", "again,  with spaces \n"),
            ("ls", "      21  hello.txt\n       2  b\n"),
        ],
    );
    let image = std::fs::read(&disk).unwrap();
    assert_eq!(
        tar_entries(&image),
        vec![
            ("hello.txt".to_string(), b"Hello, disk!\n".to_vec()),
            ("hello.txt".to_string(), b"again,  with spaces \n".to_vec()),
            ("b".to_string(), b"x\n".to_vec()),
        ]
    );
    // `tar -x` keeps the last version, as the OS does.
    let out = dir.join("out");
    std::fs::create_dir(&out).unwrap();
    host_tar(&["-xf", "../disk.img"], &out);
    assert_eq!(
        std::fs::read(out.join("hello.txt")).unwrap(),
        b"again,  with spaces \n"
    );
    assert_eq!(std::fs::read(out.join("b")).unwrap(), b"x\n");
}

#[test]
fn the_os_reads_a_tar_archive_made_on_the_host() {
    let dir = scratch("os-disk-host-tar");
    let files = dir.join("files");
    std::fs::create_dir_all(files.join("notes")).unwrap();
    std::fs::write(files.join("a.txt"), "first file\n").unwrap();
    // Longer than one block and than cat's 1 KiB buffer, without a final newline.
    let long: String = (0..300).map(|i| format!("line {i}\n")).collect::<String>() + "end";
    std::fs::write(files.join("notes/long.txt"), &long).unwrap();
    std::fs::write(files.join("empty"), "").unwrap();
    let disk = dir.join("disk.img");
    host_tar(
        &[
            "-cf",
            disk.to_str().unwrap(),
            "--format=ustar",
            "a.txt",
            "notes",
            "empty",
        ],
        &files,
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .unwrap()
        .set_len(64 * 1024)
        .unwrap();
    let size = long.len();
    session_with_disk(
        &disk,
        false,
        &[
            (
                "ls",
                &format!("      11  a.txt\n{size:>8}  notes/long.txt\n       0  empty\n"),
            ),
            ("cat a.txt", "first file\n"),
            ("cat notes/long.txt", &long),
            ("cat empty", ""),
            ("cat notes", "cat: no such file: notes\n"),
            ("cat", "cat: usage: cat NAME\n"),
            ("write", "write: usage: write NAME TEXT...\n"),
        ],
    );
}

#[test]
fn a_read_only_disk_is_not_written_and_stays_the_same_byte_for_byte() {
    let dir = scratch("os-disk-ro");
    let disk = zeroed_image(&dir, 1 << 20);
    session_with_disk(
        &disk,
        false,
        &[("write kept yes", "wrote 4 bytes to kept\n")],
    );
    let before = std::fs::read(&disk).unwrap();
    session_with_disk(
        &disk,
        true,
        &[
            ("write new text", "write: the disk is read-only\n"),
            ("write kept no", "write: the disk is read-only\n"),
            ("ls", "       4  kept\n"),
            ("cat kept", "yes\n"),
        ],
    );
    assert!(std::fs::read(&disk).unwrap() == before, "the image changed");
}

#[test]
fn a_full_disk_says_so_and_keeps_its_archive_whole() {
    let dir = scratch("os-disk-full");
    // 8 sectors: three one-block files and the two end blocks fill it exactly.
    let disk = zeroed_image(&dir, 4096);
    session_with_disk(
        &disk,
        false,
        &[
            ("write a 1", "wrote 2 bytes to a\n"),
            ("write b 2", "wrote 2 bytes to b\n"),
            ("write c 3", "wrote 2 bytes to c\n"),
            ("write d 4", "write: the disk is full\n"),
            ("ls", "       2  a\n       2  b\n       2  c\n"),
        ],
    );
    let names: Vec<String> = tar_entries(&std::fs::read(&disk).unwrap())
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
}

#[test]
fn a_disk_that_is_not_a_tar_archive_is_refused_and_left_alone() {
    let dir = scratch("os-disk-junk");
    let disk = dir.join("disk.img");
    let junk: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 1) as u8).collect();
    std::fs::write(&disk, &junk).unwrap();
    let error = "the disk is not a tar archive: give mini-kvm a zeroed file or one made with \
                 tar --format=ustar\n";
    session_with_disk(
        &disk,
        false,
        &[
            ("ls", &format!("ls: {error}")),
            ("write a b", &format!("write: {error}")),
        ],
    );
    assert!(std::fs::read(&disk).unwrap() == junk, "the image changed");
}

#[test]
fn without_a_disk_the_disk_commands_say_what_to_do() {
    session(
        &[],
        &[
            ("ls", &format!("ls: {NO_DISK}")),
            ("cat a", &format!("cat: {NO_DISK}")),
            ("write a b", &format!("write: {NO_DISK}")),
            ("sum a", &format!("sum: {NO_DISK}")),
        ],
    );
}

#[test]
fn sum_reads_a_whole_file_and_prints_its_size_checksum_time_and_disk_requests() {
    let dir = scratch("os-disk-sum");
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    // More than one 64 KiB read, and not a whole number of 64-bit words.
    let mut state = 0x1234_5678_9abc_def1u64;
    let data: Vec<u8> = (0..100_003)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    std::fs::write(files.join("data.bin"), &data).unwrap();
    std::fs::write(files.join("empty"), "").unwrap();
    let disk = dir.join("disk.img");
    host_tar(
        &[
            "-cf",
            disk.to_str().unwrap(),
            "--format=ustar",
            "data.bin",
            "empty",
        ],
        &files,
    );
    let steps = ["sum data.bin", "sum empty", "sum nope", "sum", "sum a b"];
    let input: String = steps.iter().map(|line| format!("{line}\n")).collect();
    let run = os_with_disk(&disk, true, &input);
    assert_eq!(run.status, 0, "{run:?}");
    let stdout = run.stdout_text();
    let outputs: Vec<&str> = stdout
        .strip_prefix(MENU)
        .and_then(|rest| rest.strip_suffix(&format!("{MENU}{GOODBYE}")))
        .unwrap_or_else(|| panic!("{run:?}"))
        .split(MENU)
        .collect();
    assert_eq!(outputs.len(), steps.len(), "{run:?}");
    for (step, output) in steps.iter().zip(&outputs) {
        assert!(output.starts_with(&format!("{step}\n")), "{run:?}");
    }
    let output = |i: usize| &outputs[i][steps[i].len() + 1..];
    // NAME: BYTES bytes, checksum 0x(16 hex digits), MS ms, REQUESTS disk requests
    let line = |step: usize, name: &str, bytes: usize, checksum: u64, requests: u64| {
        let text = output(step);
        let prefix = format!("{name}: {bytes} bytes, checksum {checksum:#018x}, ");
        let suffix = format!(" ms, {requests} disk requests\n");
        let ms = text
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(&suffix))
            .unwrap_or_else(|| panic!("{text:?} is not {prefix}MS{suffix}"));
        assert!(ms.parse::<u64>().is_ok(), "{text:?}");
    };
    // data.bin: three read_file calls (64 KiB, the rest, and the 0 that says the end); the first
    // walks the archive's two headers (data.bin's and empty's) and its end block, and the others
    // find the file where the kernel remembered it; two data requests of 64 KiB and 34,467
    // bytes.
    line(0, "data.bin", data.len(), checksum(&data), 3 + 2);
    line(1, "empty", 0, 0, 3);
    assert_eq!(output(2), "sum: no such file: nope\n");
    assert_eq!(output(3), "sum: usage: sum NAME\n");
    assert_eq!(output(4), "sum: usage: sum NAME\n");
}

/// The 32 hex digits `random` printed, from a session of one `random`.
fn random_line(options: &[&str]) -> String {
    let run = os(options, "random\n");
    let stdout = run.stdout_text();
    let line = stdout
        .strip_prefix(&format!("{MENU}random\n"))
        .and_then(|rest| rest.strip_suffix(&format!("{MENU}{GOODBYE}")))
        .unwrap_or_else(|| panic!("not one line of output: {run:?}"));
    assert_eq!(run.status, 0, "{run:?}");
    let digits = line.strip_suffix('\n').unwrap_or(line);
    assert!(
        digits.len() == 32 && digits.bytes().all(|b| b.is_ascii_hexdigit()),
        "not 32 hex digits: {run:?}"
    );
    digits.to_string()
}

#[test]
fn random_prints_16_bytes_from_the_entropy_device() {
    let first = random_line(&["--rng"]);
    let second = random_line(&["--rng"]);
    assert_ne!(first, second);
    session(
        &[],
        &[(
            "random",
            "random: no entropy device: start mini-kvm with --rng\n",
        )],
    );
}

#[test]
fn devices_on_the_slave_pics_irqs_work_and_verbose_lists_them() {
    // Five disks in slots 0-4 (IRQ 5-9) and the entropy device in slot 5 (IRQ 10, on the
    // slave PIC); the OS uses the first disk and the entropy device.
    let dir = scratch("os-disk-slots");
    let disks: Vec<String> = (0..5)
        .map(|i| {
            let path = dir.join(format!("d{i}.img"));
            std::fs::File::create(&path).unwrap().set_len(4096).unwrap();
            path.to_str().unwrap().to_string()
        })
        .collect();
    let mut options = vec!["--cmdline", "verbose", "--rng"];
    options.extend(disks.iter().flat_map(|disk| ["--disk", disk.as_str()]));
    let run = os(&options, "random\nwrite f x\n");
    assert_eq!(run.status, 0, "{run:?}");
    let stdout = run.stdout_text();
    let not_used = "disk, not used (the OS uses the first one that starts)";
    assert!(
        stdout.contains(&format!(
            "os: started shell (pid 1) and bgcount (pid 2)\n\
             os: virtio slot 0 at 0x00000000d0000000, IRQ 5: disk, 8 sectors (4 KiB), read-write\n\
             os: virtio slot 1 at 0x00000000d0001000, IRQ 6: {not_used}\n\
             os: virtio slot 2 at 0x00000000d0002000, IRQ 7: {not_used}\n\
             os: virtio slot 3 at 0x00000000d0003000, IRQ 8: {not_used}\n\
             os: virtio slot 4 at 0x00000000d0004000, IRQ 9: {not_used}\n\
             os: virtio slot 5 at 0x00000000d0005000, IRQ 10: entropy device\n{MENU}random\n"
        )),
        "{run:?}"
    );
    assert!(
        stdout.ends_with(&format!(
            "\n{MENU}write f x\nwrote 2 bytes to f\n{MENU}{GOODBYE}"
        )),
        "{run:?}"
    );
    let image = std::fs::read(&disks[0]).unwrap();
    assert_eq!(
        tar_entries(&image),
        vec![("f".to_string(), b"x\n".to_vec())]
    );
    // The other four disks were not touched: still 4 KiB of zeros each.
    for disk in &disks[1..] {
        assert_eq!(
            std::fs::read(disk).unwrap(),
            vec![0u8; 4096],
            "{disk} changed"
        );
    }
}

#[test]
fn verbose_says_when_there_are_no_virtio_devices() {
    let run = os(&["--cmdline", "verbose"], "");
    assert_eq!(run.status, 0, "{run:?}");
    assert!(
        run.stdout_text().contains(
            "os: started shell (pid 1) and bgcount (pid 2)\n\
             os: no virtio devices in the 8 virtio-mmio slots (mini-kvm --disk FILE, --rng)\n"
        ),
        "{run:?}"
    );
}
