//! A minimal initramfs for Linux guests: a static busybox and an `/init` script that mounts
//! /proc, /sys and /dev, prints a marker line and starts a shell on the console
//! (`mini-kvm initramfs`, README "Booting Linux").
//!
//! An initramfs is a cpio archive in the "newc" format, which the kernel unpacks into its first
//! root file system before it runs `/init`. The format is simple enough to write here: for each
//! file a 110-byte ASCII header (the magic "070701" and 13 eight-digit hex fields), the path
//! and the contents, each padded to 4 bytes; a last entry named `TRAILER!!!` ends it
//! (Documentation/driver-api/early-userspace/buffer-format.rst).

/// What `/init` prints once user space runs: the line the tests and the user wait for.
pub const INIT_MARKER: &str = "mini-kvm: initramfs /init is running";

/// The `/init` script: busybox's applets, the pseudo file systems, the modules (`{modules}`),
/// the marker, a shell. When the shell ends (Ctrl-D or `exit`), the machine powers off:
/// mini-kvm then ends with status 0.
const INIT_SCRIPT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
{modules}echo "mini-kvm: initramfs /init is running"
echo "Linux $(uname -r), $(grep -c ^processor /proc/cpuinfo) CPU(s); 'poweroff -f' ends the VM"
setsid cttyhack sh
poweroff -f
"#;

/// The drivers of mini-kvm's virtio devices (`--disk`, `--rng`, `--net`), which `--modules`
/// adds with what they depend on. Debian's kernels build them as modules, and the kernel finds
/// the devices through ACPI only once virtio_mmio is loaded.
pub const VIRTIO_MODULES: [&str; 4] = ["virtio_mmio", "virtio_blk", "virtio-rng", "virtio_net"];

/// The /init with an `insmod` line for each module, in order.
fn init_script(modules: &[Module]) -> String {
    let lines: String = modules
        .iter()
        .map(|module| format!("insmod /lib/modules/{}.ko\n", module.name))
        .collect();
    INIT_SCRIPT.replace("{modules}", &lines)
}

/// A kernel module for the initramfs: its name (the file's, without `.ko`) and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    pub bytes: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a statically linked x86-64 program: the initramfs has no libraries for it \
         (on Debian and Ubuntu: apt install busybox-static, then use /bin/busybox)"
    )]
    NotStatic { path: String },
    #[error("{path} is not a regular file: give the busybox program's file")]
    NotAFile { path: String },
    #[error("{path} is more than {max} bytes: that is no busybox (a static one is about 2 MB)")]
    TooLarge { path: String, max: u64 },
    #[error(
        "{dir} has no modules.dep: give --modules a kernel's module directory, e.g. \
         /lib/modules/$(uname -r) (it comes with the linux-image package)"
    )]
    NoModuleList { dir: String },
    #[error("the kernel in {dir} has no module {module} (its modules.dep does not list it)")]
    NoSuchModule { dir: String, module: String },
    #[error(
        "{path} is compressed: mini-kvm's initramfs loads plain .ko files with busybox's \
         insmod; decompress the module directory first (xz -d, zstd -d)"
    )]
    CompressedModule { path: String },
}

/// No busybox is this large; a larger file (or an endless one) is not read.
const MAX_BUSYBOX: u64 = 64 << 20;

/// Reads the busybox program: a regular file (opening a FIFO must not block, reading a device
/// must not go on for ever) of at most [`MAX_BUSYBOX`] bytes.
pub fn read_busybox(path: &std::path::Path) -> Result<Vec<u8>, InitramfsError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;

    let shown = path.display().to_string();
    let read_error = |source| InitramfsError::Read {
        path: shown.clone(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_error)?;
    let metadata = file.metadata().map_err(read_error)?;
    if !metadata.is_file() {
        return Err(InitramfsError::NotAFile { path: shown });
    }
    let too_large = || InitramfsError::TooLarge {
        path: shown.clone(),
        max: MAX_BUSYBOX,
    };
    if metadata.len() > MAX_BUSYBOX {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(MAX_BUSYBOX + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_BUSYBOX {
        return Err(too_large());
    }
    Ok(bytes)
}

/// The [`VIRTIO_MODULES`] of the kernel whose module directory is `dir` (/lib/modules/VERSION),
/// each after the modules it needs (from `modules.dep`), each once. A module the kernel has built
/// in (`modules.builtin`) needs no file and is left out.
pub fn read_modules(dir: &std::path::Path) -> Result<Vec<Module>, InitramfsError> {
    let shown = dir.display().to_string();
    let dep = std::fs::read_to_string(dir.join("modules.dep"))
        .map_err(|_| InitramfsError::NoModuleList { dir: shown.clone() })?;
    let builtin = std::fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
    // modules.dep: "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko ...".
    let table: Vec<(&str, Vec<&str>)> = dep
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(path, deps)| (path, deps.split_whitespace().collect()))
        .collect();
    let module_name = |path: &str| {
        let file = path.rsplit('/').next().unwrap_or(path);
        file.split(".ko").next().unwrap_or(file).to_string()
    };
    let mut order: Vec<String> = Vec::new();
    for wanted in VIRTIO_MODULES {
        let is_builtin = builtin.lines().any(|path| module_name(path) == wanted);
        if is_builtin {
            continue;
        }
        let Some((path, deps)) = table.iter().find(|(path, _)| module_name(path) == wanted) else {
            return Err(InitramfsError::NoSuchModule {
                dir: shown,
                module: wanted.to_string(),
            });
        };
        // modules.dep lists every module a module needs, the last one to be loaded first.
        for path in deps.iter().rev().chain(std::iter::once(path)) {
            if !order.iter().any(|known| known == path) {
                order.push(path.to_string());
            }
        }
    }
    order
        .iter()
        .map(|path| {
            let full = dir.join(path);
            let shown = full.display().to_string();
            if !path.ends_with(".ko") {
                return Err(InitramfsError::CompressedModule { path: shown });
            }
            let bytes = std::fs::read(&full).map_err(|source| InitramfsError::Read {
                path: shown,
                source,
            })?;
            Ok(Module {
                name: module_name(path),
                bytes,
            })
        })
        .collect()
}

/// Builds the initramfs around the busybox binary `busybox` (its bytes) read from `path`, with
/// `modules` loaded by /init before the marker.
pub fn build(path: &str, busybox: &[u8], modules: &[Module]) -> Result<Vec<u8>, InitramfsError> {
    if !is_static_x86_64_elf(busybox) {
        return Err(InitramfsError::NotStatic {
            path: path.to_string(),
        });
    }
    let mut archive = Archive::default();
    for dir in [
        "bin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "root",
        "etc",
        "sbin",
        "usr",
        "lib",
        "lib/modules",
        "mnt",
    ] {
        archive.directory(dir);
    }
    // The kernel opens /dev/console for /init's input and output before /dev is mounted.
    archive.char_device("dev/console", 5, 1);
    archive.file("bin/busybox", 0o755, busybox);
    for module in modules {
        archive.file(
            &format!("lib/modules/{}.ko", module.name),
            0o644,
            &module.bytes,
        );
    }
    archive.file("init", 0o755, init_script(modules).as_bytes());
    Ok(archive.finish())
}

/// A 64-bit little-endian x86-64 ELF executable without a program interpreter (PT_INTERP).
fn is_static_x86_64_elf(image: &[u8]) -> bool {
    let u16_at = |at: usize| {
        image
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        image
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        image
            .get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    const PT_INTERP: u32 = 3;
    const EM_X86_64: u16 = 62;
    if !image.starts_with(b"\x7fELF\x02\x01") || u16_at(18) != Some(EM_X86_64) {
        return false;
    }
    let (Some(phoff), Some(entry_size), Some(count)) = (u64_at(32), u16_at(54), u16_at(56)) else {
        return false;
    };
    (0..usize::from(count)).all(|index| {
        let at = (phoff as usize).saturating_add(index * usize::from(entry_size));
        u32_at(at).is_some_and(|kind| kind != PT_INTERP)
    })
}

/// A newc cpio archive being written.
#[derive(Default)]
struct Archive {
    bytes: Vec<u8>,
    next_inode: u32,
}

impl Archive {
    fn directory(&mut self, path: &str) {
        self.entry(path, 0o040_755, 2, (0, 0), &[]);
    }

    fn char_device(&mut self, path: &str, major: u32, minor: u32) {
        self.entry(path, 0o020_600, 1, (major, minor), &[]);
    }

    fn file(&mut self, path: &str, permissions: u32, contents: &[u8]) {
        self.entry(path, 0o100_000 | permissions, 1, (0, 0), contents);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[]);
        self.bytes
    }

    /// One entry: the header, the NUL-terminated path and the contents, each padded to 4 bytes.
    fn entry(&mut self, path: &str, mode: u32, links: u32, device: (u32, u32), contents: &[u8]) {
        self.next_inode += 1;
        let fields = [
            self.next_inode,
            mode,
            0, // uid: root
            0, // gid
            links,
            0, // mtime: the epoch, so that the archive is the same every time
            contents.len() as u32,
            0, // the device the file is on: major, minor
            0,
            device.0, // for a device node: its major and minor
            device.1,
            path.len() as u32 + 1,
            0, // checksum: only for the "070702" format
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08X}").as_bytes());
        }
        self.bytes.extend_from_slice(path.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(contents);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A made-up static ELF header: 64-bit, x86-64, one PT_LOAD program header.
    fn static_elf() -> Vec<u8> {
        let mut elf = vec![0u8; 64 + 56];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[18..20].copy_from_slice(&62u16.to_le_bytes());
        elf[32..40].copy_from_slice(&64u64.to_le_bytes());
        elf[54..56].copy_from_slice(&56u16.to_le_bytes());
        elf[56..58].copy_from_slice(&1u16.to_le_bytes());
        elf[64..68].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        elf
    }

    #[test]
    fn entries_are_newc_headers_padded_to_four_bytes() {
        let mut archive = Archive::default();
        archive.file("init", 0o755, b"abcde");
        let bytes = archive.finish();
        // Header: magic, inode 1, mode 0o100755, ..., file size 5, ..., name size 5.
        assert_eq!(&bytes[..6], b"070701");
        assert_eq!(&bytes[6..14], b"00000001");
        assert_eq!(&bytes[14..22], b"000081ED");
        assert_eq!(&bytes[54..62], b"00000005");
        assert_eq!(&bytes[94..102], b"00000005");
        // 110 + "init\0" = 115, padded to 116; then 5 bytes of data, padded to 8.
        assert_eq!(&bytes[110..116], b"init\0\0");
        assert_eq!(&bytes[116..124], b"abcde\0\0\0");
        assert_eq!(&bytes[124..130], b"070701");
        assert!(bytes.ends_with(b"TRAILER!!!\0\0\0\0"));
        assert_eq!(bytes.len() % 4, 0);
    }

    #[test]
    fn only_a_static_x86_64_program_is_taken() {
        let elf = static_elf();
        assert!(build("busybox", &elf, &[]).is_ok());
        let mut dynamic = elf.clone();
        dynamic[64..68].copy_from_slice(&3u32.to_le_bytes()); // PT_INTERP
        let error = build("/usr/bin/busybox", &dynamic, &[]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "/usr/bin/busybox is not a statically linked x86-64 program: the initramfs has no \
             libraries for it (on Debian and Ubuntu: apt install busybox-static, then use \
             /bin/busybox)"
        );
        assert!(build("x", b"#!/bin/sh\n", &[]).is_err());
    }

    #[test]
    fn the_archive_holds_init_busybox_and_the_console() {
        let archive = build("busybox", &static_elf(), &[]).unwrap();
        for name in [
            &b"init\0"[..],
            b"bin/busybox\0",
            b"dev/console\0",
            b"TRAILER!!!\0",
        ] {
            assert!(
                archive.windows(name.len()).any(|window| window == name),
                "{}",
                String::from_utf8_lossy(name)
            );
        }
        assert!(INIT_SCRIPT.contains(INIT_MARKER));
    }

    #[test]
    fn modules_come_after_what_they_need_each_once_and_builtins_not_at_all() {
        let dir = std::env::temp_dir().join(format!("mini-kvm-modules-{}", std::process::id()));
        let kernel = dir.join("kernel");
        std::fs::create_dir_all(&kernel).unwrap();
        std::fs::write(
            dir.join("modules.dep"),
            "kernel/virtio_mmio.ko: kernel/virtio.ko kernel/virtio_ring.ko\n\
             kernel/virtio.ko: kernel/virtio_ring.ko\n\
             kernel/virtio_ring.ko:\n\
             kernel/virtio_blk.ko: kernel/virtio.ko kernel/virtio_ring.ko\n\
             kernel/virtio_net.ko: kernel/net_failover.ko kernel/failover.ko kernel/virtio.ko \
             kernel/virtio_ring.ko\n\
             kernel/net_failover.ko: kernel/failover.ko\n\
             kernel/failover.ko:\n",
        )
        .unwrap();
        std::fs::write(dir.join("modules.builtin"), "kernel/virtio-rng.ko\n").unwrap();
        for name in [
            "virtio_mmio",
            "virtio",
            "virtio_ring",
            "virtio_blk",
            "virtio_net",
            "net_failover",
            "failover",
        ] {
            std::fs::write(kernel.join(format!("{name}.ko")), name).unwrap();
        }
        let modules = read_modules(&dir).unwrap();
        let names: Vec<&str> = modules.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "virtio_ring",
                "virtio",
                "virtio_mmio",
                "virtio_blk",
                "failover",
                "net_failover",
                "virtio_net"
            ]
        );
        assert_eq!(modules[0].bytes, b"virtio_ring");
        let script = init_script(&modules);
        assert!(script.contains(
            "mount -t devtmpfs devtmpfs /dev\ninsmod /lib/modules/virtio_ring.ko\n\
             insmod /lib/modules/virtio.ko\n"
        ));
        assert!(script.contains("insmod /lib/modules/virtio_net.ko\necho \"mini-kvm: initramfs"));

        std::fs::write(dir.join("modules.builtin"), "").unwrap();
        assert_eq!(
            read_modules(&dir).unwrap_err().to_string(),
            format!(
                "the kernel in {} has no module virtio-rng (its modules.dep does not list it)",
                dir.display()
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            read_modules(&dir),
            Err(InitramfsError::NoModuleList { .. })
        ));
    }
}
