//! A validated run configuration: what to run and how, checked before any KVM call.

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::arch::x86::layout::{
    DEFAULT_MEMORY_SIZE, MAX_MEMORY_SIZE, MIN_MEMORY_SIZE, VIRTIO_SLOTS,
};
use crate::loader::{
    BuiltinGuest, GuestMode, LoaderError, builtin_guest, builtin_guests, read_image_file,
};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "'{0}' is not a memory size: give a number with an optional K, M or G suffix (e.g. 1M, 64M, 512K)"
    )]
    BadMemorySize(String),
    #[error(
        "memory size {0} is out of range: it must be between {min} and {max}",
        min = human_size(MIN_MEMORY_SIZE),
        max = human_size(MAX_MEMORY_SIZE)
    )]
    MemoryOutOfRange(String),
    #[error("memory size {0} is not a multiple of 4 KiB (the page size KVM maps memory in)")]
    MemoryNotPageAligned(String),
    #[error("'{0}' is not a timeout: give a positive number of seconds (e.g. 1, 2.5)")]
    BadTimeout(String),
    #[error("{0} guests is too many: mini-kvm runs at most {MAX_GUESTS} at once")]
    TooManyGuests(usize),
    #[error("--input {number}: there is no guest {number} (this run has {guests})")]
    NoSuchInputGuest { number: usize, guests: usize },
    #[error(
        "unknown guest '{name}': the built-in guests are {list}; to run a file, give its path (e.g. ./{name})",
        list = builtin_names()
    )]
    UnknownGuest { name: String },
    #[error(
        "'{value}' came after --gdb with a space, so it was read as a guest, and there is no \
         guest or file of that name: --gdb takes its value after '=' ({meant}; --gdb alone \
         makes a private socket)"
    )]
    GdbValueWithoutEquals {
        value: String,
        /// What the value would mean with '=': a TCP port for a number, else a socket's path.
        meant: String,
    },
    #[error("'{0}' is not a CPU count: give a whole number from 1 (e.g. --cpus 2)")]
    BadCpuCount(String),
    #[error("'{0}' is not a CPU mode: give real, protected or long")]
    BadMode(String),
    #[error(
        "'{0}' is not a disk: give an image file, with ,ro to make it read-only (e.g. --disk disk.img,ro)"
    )]
    BadDisk(String),
    #[error(
        "--disk with {0} guests: a disk image belongs to one guest; run the guest that needs it alone"
    )]
    DisksWithSeveralGuests(usize),
    #[error(
        "{0} virtio devices is too many: a guest has {VIRTIO_SLOTS} virtio slots (each --disk and \
         --net takes one, and --rng one)"
    )]
    TooManyVirtioDevices(usize),
    #[error(
        "'{0}' is not a network card: give tap=NAME, and ,mac=52:54:00:12:34:56 for a fixed \
         address (e.g. --net tap=tap0)"
    )]
    BadNet(String),
    #[error("{option} with {guests} guests: the file holds one screen; run the guest alone")]
    ScreenFileWithSeveralGuests { option: &'static str, guests: usize },
    #[error(
        "'{0}' is not a place for gdb to connect to: give --gdb alone (a private Unix socket), \
         --gdb=PATH (a Unix socket there) or --gdb=tcp:PORT (e.g. tcp:1234; tcp:0 picks a free \
         port)"
    )]
    BadGdb(String),
    #[error(
        "--gdb={0}: a bare port is not taken, because any user of this machine can connect to a \
         TCP port and take over the guest; write --gdb=tcp:{0} if that is what you want, or \
         --gdb alone for a Unix socket only you can use"
    )]
    GdbBarePort(String),
    #[error(
        "--gdb=tcp:{port} with {guests} guests: the last one would listen past port 65535; choose \
         a lower port, or 0"
    )]
    GdbPortsRunOut { port: u16, guests: usize },
    #[error(
        "--net with {0} guests: a TAP device belongs to one guest; run the guest that needs it \
         alone"
    )]
    NetWithSeveralGuests(usize),
    #[error("--paging needs --mode protected (long mode always has paging; real mode has none)")]
    PagingWithoutProtected,
    #[error(
        "--snapshot: this version of snapshots cannot save {0} yet (docs/snapshot.md \
         lists what it saves)"
    )]
    SnapshotCannotSave(&'static str),
    #[error("--snapshot-on-output needs a text to wait for (e.g. --snapshot-on-output '> ')")]
    SnapshotEmptyText,
    #[error(
        "--snapshot DIR needs its moment: --snapshot-on-output TEXT or --snapshot-after-exits N"
    )]
    SnapshotWithoutMoment,
    #[error(
        "'{name}' is a built-in guest that starts in {mode}: --mode and --paging apply to flat \
         binaries from disk"
    )]
    ModeForBuiltin { name: String, mode: &'static str },
}

fn builtin_names() -> String {
    builtin_guests()
        .iter()
        .map(|guest| guest.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `1048576` → "1M", `4096` → "4K".
pub fn human_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")];
    for (unit, suffix) in UNITS {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    format!("{bytes} bytes")
}

/// What to run.
#[derive(Debug, Clone)]
pub enum GuestImage {
    Builtin(&'static BuiltinGuest),
    /// A flat real-mode binary on disk.
    File(PathBuf),
}

impl GuestImage {
    /// The guest's bytes: embedded for a built-in one, read from disk for a file (no larger
    /// than `memory`, the guest's RAM, and within `timeout`, `--timeout`).
    pub fn bytes(
        &self,
        memory: u64,
        timeout: Option<Duration>,
    ) -> Result<Cow<'static, [u8]>, LoaderError> {
        match self {
            GuestImage::Builtin(builtin) => Ok(Cow::Borrowed(builtin.image)),
            GuestImage::File(path) => Ok(Cow::Owned(read_image_file(path, memory, timeout)?)),
        }
    }

    /// A built-in guest's name wins; anything else is taken as a path when it looks like one
    /// (has a `/` or a `.`). `./hello` runs a file called `hello`.
    pub fn resolve(argument: &str) -> Result<GuestImage, ConfigError> {
        if let Some(guest) = builtin_guest(argument) {
            return Ok(GuestImage::Builtin(guest));
        }
        if argument.contains('/') || argument.contains('.') {
            return Ok(GuestImage::File(PathBuf::from(argument)));
        }
        Err(ConfigError::UnknownGuest {
            name: argument.to_string(),
        })
    }

    /// The name shown in messages: the built-in name or the file name.
    pub fn name(&self) -> String {
        match self {
            GuestImage::Builtin(guest) => guest.name.to_string(),
            GuestImage::File(path) => path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into(),
            ),
        }
    }

    /// The built-in flat guest's own mode; `None` for a file or a built-in kernel (its format
    /// or `--mode` decides).
    pub fn builtin_mode(&self) -> Option<GuestMode> {
        match self {
            GuestImage::Builtin(guest) => guest.mode(),
            GuestImage::File(_) => None,
        }
    }
}

/// The most guests one run may hold. Each is a KVM VM with its own RAM, a vCPU thread and a
/// watcher thread; past a few dozen, a 2-core host only time-slices them.
pub const MAX_GUESTS: usize = 64;

/// How the output of the guests is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStyle {
    /// One guest: its bytes as they come. Several: whole lines, each with the guest's label.
    Lines,
    /// Bytes as they come, from every guest, no labels (`--raw`, the original Mini-KVM's way).
    Raw,
    /// The split-screen terminal view (`--tui`).
    Tui,
}

/// `--mode` as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeArg {
    Real,
    Protected,
    Long,
}

/// Parses `--mode`.
pub fn parse_mode(text: &str) -> Result<ModeArg, ConfigError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "real" => Ok(ModeArg::Real),
        "protected" => Ok(ModeArg::Protected),
        "long" => Ok(ModeArg::Long),
        _ => Err(ConfigError::BadMode(text.to_string())),
    }
}

/// `--mode` and `--paging` together: the mode a flat binary starts in (`None`: not given).
pub fn flat_mode(mode: Option<ModeArg>, paging: bool) -> Result<Option<GuestMode>, ConfigError> {
    match (mode, paging) {
        (None, false) => Ok(None),
        (Some(ModeArg::Real), false) => Ok(Some(GuestMode::Real)),
        (Some(ModeArg::Protected), paging) => Ok(Some(GuestMode::Protected { paging })),
        (Some(ModeArg::Long), false) => Ok(Some(GuestMode::Long)),
        (_, true) => Err(ConfigError::PagingWithoutProtected),
    }
}

/// One run of one or more guests, each in its own VM: what to run, how each VM is built
/// ([`VmConfig`]), and how the run is shown and bounded.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub guests: Vec<GuestImage>,
    /// How each guest's VM is built (the same options for every guest).
    pub vm: VmConfig,
    /// For each guest.
    pub timeout: Option<Duration>,
    /// Print exit statistics on stderr at the end.
    pub stats: bool,
    pub output: OutputStyle,
    /// Colour the labels (stdout is a terminal, no `--no-color`, no `NO_COLOR`).
    pub colour: bool,
    /// The guest (0-based) that gets stdin; the others see end of input at once.
    pub input_guest: usize,
    /// `--gdb`: where each guest's GDB stub listens (src/gdb/).
    pub gdb: Option<GdbAddress>,
    /// `--display`: show each guest's screen in the terminal view (with `--tui`'s panes).
    pub display: bool,
    /// `--screen-dump FILE`: the VGA text screen written there at the end (one guest only).
    pub screen_dump: Option<PathBuf>,
    /// `--screenshot FILE`: the graphics screen written there as PNG at the end (one guest
    /// only).
    pub screenshot: Option<PathBuf>,
    /// stdin is a terminal: put it in raw mode when the guest takes keyboard input.
    pub terminal: bool,
}

/// How a guest's VM is built: its RAM, CPUs, devices and entry, and how its vCPUs are traced
/// and filtered. The builder (src/vmm/builder.rs) reads it, with the guest's image.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// `--mem`: guest RAM in bytes. `None`: each guest's default ([`VmConfig::memory_for`]).
    pub memory_size: Option<u64>,
    /// `--cpus`: vCPUs per guest (1 and up; the host's KVM and mini-kvm bound it, builder.rs).
    pub cpus: usize,
    /// `--mode`/`--paging`: the mode of a flat binary from disk.
    pub mode: Option<GuestMode>,
    /// `--irqchip`: the in-kernel interrupt controller and PIT for a real-mode guest too.
    pub irqchip: bool,
    /// `--cmdline`: the command line of a multiboot, PVH or Linux kernel.
    pub cmdline: Option<String>,
    /// `--initrd`: the initramfs file of a Linux kernel.
    pub initrd: Option<PathBuf>,
    /// `--disk FILE[,ro]`: virtio-blk disks, in the order given.
    pub disks: Vec<DiskArg>,
    /// `--net tap=NAME[,mac=...]`: virtio-net cards, each on a TAP device.
    pub nets: Vec<NetArg>,
    /// `--rng`: a virtio-rng entropy device.
    pub rng: bool,
    /// Trace every VM exit and hypercall on stderr.
    pub verbose: bool,
    /// Queue writes to the UART's transmit register and the debug console on KVM's
    /// coalesced-I/O ring instead of exiting for each (`--no-coalesce` turns it off).
    pub coalesce: bool,
    /// Put each thread under its seccomp filter once the guest runs (src/vmm/seccomp.rs). The
    /// command line turns it on (`--no-seccomp` off); a library caller chooses, since vCPU 0
    /// runs on the caller's thread and a filter stays on a thread for good.
    pub seccomp: bool,
    /// `--snapshot DIR` with `--snapshot-on-output TEXT` or `--snapshot-after-exits N`.
    pub snapshot: Option<SnapshotRequest>,
}

/// `--snapshot DIR` with its moment: save the guest to DIR then (docs/snapshot.md), and stop it
/// there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRequest {
    pub moment: SnapshotMoment,
    pub dir: PathBuf,
}

/// When a snapshot is taken: at the first VM exit after...
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotMoment {
    /// `--snapshot-on-output TEXT`: ...the guest's output has shown TEXT.
    Output(String),
    /// `--snapshot-after-exits N`: ...the guest's Nth VM exit.
    Exits(u64),
}

impl SnapshotMoment {
    /// The moment, in a sentence: "ended before {this}".
    pub fn describe(&self) -> String {
        match self {
            SnapshotMoment::Output(text) => format!("its output showed {text:?}"),
            SnapshotMoment::Exits(count) => format!("{count} VM exits"),
        }
    }
}

impl Default for VmConfig {
    fn default() -> VmConfig {
        VmConfig {
            memory_size: None,
            cpus: 1,
            mode: None,
            irqchip: false,
            cmdline: None,
            initrd: None,
            disks: Vec::new(),
            nets: Vec::new(),
            rng: false,
            verbose: false,
            coalesce: true,
            seccomp: false,
            snapshot: None,
        }
    }
}

impl VmConfig {
    /// The mode a flat binary starts in: the built-in guest's own, or `--mode`. A built-in guest
    /// with `--mode` is an error.
    pub fn flat_mode(&self, guest: &GuestImage) -> Result<Option<GuestMode>, ConfigError> {
        match (guest.builtin_mode(), self.mode) {
            (Some(own), None) => Ok(Some(own)),
            (Some(own), Some(_)) => Err(ConfigError::ModeForBuiltin {
                name: guest.name(),
                mode: own.name(),
            }),
            (None, mode) => Ok(mode),
        }
    }

    /// The RAM `guest` gets: `--mem`, or the built-in's own default (16 MiB for the teaching
    /// OS), or DEFAULT_MEMORY_SIZE (1 MiB).
    pub fn memory_for(&self, guest: &GuestImage) -> u64 {
        let builtin_default = match guest {
            GuestImage::Builtin(builtin) => builtin.default_memory(),
            GuestImage::File(_) => None,
        };
        self.memory_size
            .or(builtin_default)
            .unwrap_or(DEFAULT_MEMORY_SIZE)
    }

    /// The most an initramfs (`--initrd`) may be: guest RAM.
    pub fn memory_for_initrd(&self) -> u64 {
        self.memory_size.unwrap_or(DEFAULT_MEMORY_SIZE)
    }
}

impl RunConfig {
    pub fn new(guests: Vec<GuestImage>) -> RunConfig {
        RunConfig {
            guests,
            vm: VmConfig::default(),
            timeout: None,
            stats: false,
            output: OutputStyle::Lines,
            colour: false,
            input_guest: 0,
            gdb: None,
            display: false,
            screen_dump: None,
            screenshot: None,
            terminal: false,
        }
    }

    /// Do the guests get a display adapter? With `--display`, `--screen-dump` or `--screenshot`;
    /// without them, no run changes (a Linux kernel probing the VGA ports finds nothing).
    pub fn display_on(&self) -> bool {
        self.display || self.screen_dump.is_some() || self.screenshot.is_some()
    }

    /// Checks what the command line alone cannot: the number of guests and `--input`, and the
    /// virtio devices.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.vm.disks.is_empty() && self.guests.len() > 1 {
            return Err(ConfigError::DisksWithSeveralGuests(self.guests.len()));
        }
        if !self.vm.nets.is_empty() && self.guests.len() > 1 {
            return Err(ConfigError::NetWithSeveralGuests(self.guests.len()));
        }
        for (option, given) in [
            ("--screen-dump", self.screen_dump.is_some()),
            ("--screenshot", self.screenshot.is_some()),
        ] {
            if given && self.guests.len() > 1 {
                return Err(ConfigError::ScreenFileWithSeveralGuests {
                    option,
                    guests: self.guests.len(),
                });
            }
        }
        let virtio_devices = self.vm.disks.len() + self.vm.nets.len() + usize::from(self.vm.rng);
        if virtio_devices > VIRTIO_SLOTS {
            return Err(ConfigError::TooManyVirtioDevices(virtio_devices));
        }
        if let Some(request) = &self.vm.snapshot {
            self.check_snapshot(request)?;
        }
        if self.guests.len() > MAX_GUESTS {
            return Err(ConfigError::TooManyGuests(self.guests.len()));
        }
        if self.input_guest >= self.guests.len() {
            return Err(ConfigError::NoSuchInputGuest {
                number: self.input_guest + 1,
                guests: self.guests.len(),
            });
        }
        Ok(())
    }

    /// What a snapshot of this version cannot save yet is refused before the guest runs.
    fn check_snapshot(&self, request: &SnapshotRequest) -> Result<(), ConfigError> {
        if request.moment == SnapshotMoment::Output(String::new()) {
            return Err(ConfigError::SnapshotEmptyText);
        }
        let unsaved = [
            (self.guests.len() > 1, "several guests"),
            (self.vm.cpus > 1, "several vCPUs (--cpus)"),
            (!self.vm.disks.is_empty(), "a virtio disk (--disk)"),
            (!self.vm.nets.is_empty(), "a network card (--net)"),
            (self.vm.rng, "the virtio entropy device (--rng)"),
            (
                self.display_on(),
                "the display (--display, --screen-dump, --screenshot)",
            ),
            (self.gdb.is_some(), "a debugger's state (--gdb)"),
            (self.output == OutputStyle::Tui, "the --tui view's guests"),
        ];
        match unsaved.iter().find(|(present, _)| *present) {
            Some((_, what)) => Err(ConfigError::SnapshotCannotSave(what)),
            None => Ok(()),
        }
    }

    /// Are lines labelled with their guest? Only when several guests share stdout.
    pub fn labelled(&self) -> bool {
        self.output == OutputStyle::Lines && self.guests.len() > 1
    }
}

/// Whether to colour labels: only on a terminal, unless `--no-color` or `NO_COLOR` says no
/// (https://no-color.org: any non-empty value).
pub fn use_colour(
    stdout_is_terminal: bool,
    no_color_flag: bool,
    no_color_env: Option<&str>,
) -> bool {
    stdout_is_terminal && !no_color_flag && no_color_env.is_none_or(str::is_empty)
}

/// Parses `--mem`: bytes, or a number with a K, M or G suffix (powers of 1024).
pub fn parse_memory_size(text: &str) -> Result<u64, ConfigError> {
    let bad = || ConfigError::BadMemorySize(text.to_string());
    let trimmed = text.trim();
    let (digits, multiplier) = match trimmed.char_indices().last() {
        Some((at, 'k' | 'K')) => (&trimmed[..at], 1u64 << 10),
        Some((at, 'm' | 'M')) => (&trimmed[..at], 1 << 20),
        Some((at, 'g' | 'G')) => (&trimmed[..at], 1 << 30),
        Some(_) => (trimmed, 1),
        None => return Err(bad()),
    };
    let number: u64 = digits.parse().map_err(|_| bad())?;
    let bytes = number
        .checked_mul(multiplier)
        .ok_or_else(|| ConfigError::MemoryOutOfRange(text.to_string()))?;
    if !(MIN_MEMORY_SIZE..=MAX_MEMORY_SIZE).contains(&bytes) {
        return Err(ConfigError::MemoryOutOfRange(text.to_string()));
    }
    if bytes % 4096 != 0 {
        return Err(ConfigError::MemoryNotPageAligned(text.to_string()));
    }
    Ok(bytes)
}

/// Parses `--cpus`: a whole number from 1 (the upper bound depends on the host: vmm/builder.rs).
pub fn parse_cpus(text: &str) -> Result<usize, ConfigError> {
    match text.trim().parse::<usize>() {
        Ok(cpus) if cpus >= 1 => Ok(cpus),
        _ => Err(ConfigError::BadCpuCount(text.to_string())),
    }
}

/// Parses `--timeout`: a positive number of seconds, fractions allowed.
pub fn parse_timeout(text: &str) -> Result<Duration, ConfigError> {
    let bad = || ConfigError::BadTimeout(text.to_string());
    let seconds: f64 = text.trim().parse().map_err(|_| bad())?;
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 1e9 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdb_addresses_and_one_per_guest() {
        assert_eq!(parse_gdb(""), Ok(GdbAddress::Private));
        assert_eq!(parse_gdb("tcp:1234"), Ok(GdbAddress::Tcp(1234)));
        assert_eq!(parse_gdb("tcp:0"), Ok(GdbAddress::Tcp(0)));
        assert_eq!(
            parse_gdb("/tmp/g.sock"),
            Ok(GdbAddress::Unix("/tmp/g.sock".into()))
        );
        assert_eq!(parse_gdb("g.sock"), Ok(GdbAddress::Unix("g.sock".into())));
        for bad in ["tcp:65536", "tcp:-1", "tcp:port", "tcp:"] {
            assert_eq!(parse_gdb(bad), Err(ConfigError::BadGdb(bad.into())));
        }
        assert_eq!(
            parse_gdb("1234"),
            Err(ConfigError::GdbBarePort("1234".into()))
        );
        let tcp = GdbAddress::Tcp(1234);
        assert_eq!(tcp.for_guest(0, 1), Ok(GdbAddress::Tcp(1234)));
        assert_eq!(tcp.for_guest(2, 3), Ok(GdbAddress::Tcp(1236)));
        assert_eq!(GdbAddress::Tcp(0).for_guest(2, 3), Ok(GdbAddress::Tcp(0)));
        assert_eq!(
            GdbAddress::Tcp(65535).for_guest(1, 2),
            Err(ConfigError::GdbPortsRunOut {
                port: 65535,
                guests: 2
            })
        );
        let unix = GdbAddress::Unix("/tmp/g.sock".into());
        assert_eq!(unix.for_guest(0, 1), Ok(unix.clone()));
        assert_eq!(
            unix.for_guest(1, 2),
            Ok(GdbAddress::Unix("/tmp/g.sock.2".into()))
        );
        assert_eq!(GdbAddress::Private.for_guest(1, 2), Ok(GdbAddress::Private));
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory_size("1M"), Ok(1 << 20));
        assert_eq!(parse_memory_size("64m"), Ok(64 << 20));
        assert_eq!(parse_memory_size("512K"), Ok(512 << 10));
        assert_eq!(parse_memory_size("1G"), Ok(1 << 30));
        assert_eq!(parse_memory_size("1048576"), Ok(1 << 20));
        assert_eq!(
            parse_memory_size("12Q"),
            Err(ConfigError::BadMemorySize("12Q".into()))
        );
        assert_eq!(
            parse_memory_size(""),
            Err(ConfigError::BadMemorySize("".into()))
        );
        assert_eq!(
            parse_memory_size("64K"),
            Err(ConfigError::MemoryOutOfRange("64K".into()))
        );
        assert_eq!(
            parse_memory_size("1000G"),
            Err(ConfigError::MemoryOutOfRange("1000G".into()))
        );
        assert_eq!(
            parse_memory_size("99999999999999999999G"),
            Err(ConfigError::BadMemorySize("99999999999999999999G".into()))
        );
        assert_eq!(
            parse_memory_size("1000001"),
            Err(ConfigError::MemoryNotPageAligned("1000001".into()))
        );
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("1"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_timeout("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_timeout("0").is_err());
        assert!(parse_timeout("-1").is_err());
        assert!(parse_timeout("soon").is_err());
        assert!(parse_timeout("inf").is_err());
    }

    #[test]
    fn cpu_counts() {
        assert_eq!(parse_cpus("1"), Ok(1));
        assert_eq!(parse_cpus("4"), Ok(4));
        assert_eq!(parse_cpus("0"), Err(ConfigError::BadCpuCount("0".into())));
        assert_eq!(
            parse_cpus("two"),
            Err(ConfigError::BadCpuCount("two".into()))
        );
        assert_eq!(parse_cpus("-1"), Err(ConfigError::BadCpuCount("-1".into())));
    }

    #[test]
    fn colour_rules() {
        assert!(use_colour(true, false, None));
        assert!(use_colour(true, false, Some("")));
        assert!(!use_colour(false, false, None));
        assert!(!use_colour(true, true, None));
        assert!(!use_colour(true, false, Some("1")));
    }

    #[test]
    fn guest_count_and_input_guest() {
        let hello = || GuestImage::resolve("hello").unwrap();
        let mut config = RunConfig::new(vec![hello(), hello()]);
        assert_eq!(config.validate(), Ok(()));
        assert!(config.labelled());
        config.input_guest = 2;
        assert_eq!(
            config.validate(),
            Err(ConfigError::NoSuchInputGuest {
                number: 3,
                guests: 2
            })
        );
        let config = RunConfig::new((0..=MAX_GUESTS).map(|_| hello()).collect());
        assert_eq!(
            config.validate(),
            Err(ConfigError::TooManyGuests(MAX_GUESTS + 1))
        );
        assert!(!RunConfig::new(vec![hello()]).labelled());
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("protected"), Ok(ModeArg::Protected));
        assert_eq!(parse_mode("LONG"), Ok(ModeArg::Long));
        assert!(parse_mode("unreal").is_err());
        assert_eq!(flat_mode(None, false), Ok(None));
        assert_eq!(
            flat_mode(Some(ModeArg::Protected), true),
            Ok(Some(GuestMode::Protected { paging: true }))
        );
        assert_eq!(
            flat_mode(Some(ModeArg::Long), true),
            Err(ConfigError::PagingWithoutProtected)
        );
        assert_eq!(
            flat_mode(None, true),
            Err(ConfigError::PagingWithoutProtected)
        );
    }

    #[test]
    fn guest_names_and_paths() {
        assert!(matches!(
            GuestImage::resolve("hello"),
            Ok(GuestImage::Builtin(g)) if g.name == "hello"
        ));
        assert!(matches!(
            GuestImage::resolve("./hello"),
            Ok(GuestImage::File(_))
        ));
        assert!(matches!(
            GuestImage::resolve("x.bin"),
            Ok(GuestImage::File(_))
        ));
        assert!(matches!(
            GuestImage::resolve("nosuch"),
            Err(ConfigError::UnknownGuest { .. })
        ));
    }
}

/// `--disk FILE[,ro]`: a raw image for a virtio-blk disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskArg {
    pub path: PathBuf,
    pub read_only: bool,
}

/// Parses `--disk`: a path, and `,ro` at the end for a read-only disk (a path with other
/// commas is taken whole).
pub fn parse_disk(text: &str) -> Result<DiskArg, ConfigError> {
    let (path, read_only) = match text.strip_suffix(",ro") {
        Some(path) => (path, true),
        None => (text, false),
    };
    if path.is_empty() {
        return Err(ConfigError::BadDisk(text.to_string()));
    }
    Ok(DiskArg {
        path: PathBuf::from(path),
        read_only,
    })
}

/// `--gdb`: where gdb connects. A debugger can do anything to the guest, so only its user may
/// connect by default: a Unix socket that only they can open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GdbAddress {
    /// `--gdb` alone: a Unix socket in a new directory only the user can enter (src/gdb/).
    Private,
    /// `--gdb=PATH`: a Unix socket made at this path, mode 0600 whatever the umask.
    Unix(PathBuf),
    /// `--gdb=tcp:PORT`: a TCP port on 127.0.0.1 (0: one the kernel picks), which any user of
    /// the machine can connect to (mini-kvm says so when it listens).
    Tcp(u16),
}

impl GdbAddress {
    /// Where guest `index` (0-based) of `count` listens: with several guests, the port plus
    /// the index (a picked port stays picked), the path with `.N` (from 1) added, or a private
    /// directory of its own.
    pub fn for_guest(&self, index: usize, count: usize) -> Result<GdbAddress, ConfigError> {
        match self {
            _ if count == 1 => Ok(self.clone()),
            GdbAddress::Private => Ok(GdbAddress::Private),
            GdbAddress::Tcp(0) => Ok(GdbAddress::Tcp(0)),
            GdbAddress::Tcp(port) => u16::try_from(usize::from(*port) + index)
                .map(GdbAddress::Tcp)
                .map_err(|_| ConfigError::GdbPortsRunOut {
                    port: *port,
                    guests: count,
                }),
            GdbAddress::Unix(path) => {
                let mut path = path.clone().into_os_string();
                path.push(format!(".{}", index + 1));
                Ok(GdbAddress::Unix(path.into()))
            }
        }
    }
}

/// Parses `--gdb`'s value: empty (`--gdb` alone) for a private socket, `tcp:PORT`, or a path.
/// A bare number is refused: it would have meant TCP, which is no longer the default.
pub fn parse_gdb(text: &str) -> Result<GdbAddress, ConfigError> {
    if text.is_empty() {
        return Ok(GdbAddress::Private);
    }
    if let Some(port) = text.strip_prefix("tcp:") {
        return port
            .parse::<u16>()
            .map(GdbAddress::Tcp)
            .map_err(|_| ConfigError::BadGdb(text.to_string()));
    }
    if text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(ConfigError::GdbBarePort(text.to_string()));
    }
    Ok(GdbAddress::Unix(PathBuf::from(text)))
}

/// `--net tap=NAME[,mac=XX:XX:XX:XX:XX:XX]`: a virtio-net card on a TAP device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetArg {
    pub tap: String,
    /// `None`: a random locally administered address.
    pub mac: Option<[u8; 6]>,
}

/// Parses `--net`.
pub fn parse_net(text: &str) -> Result<NetArg, ConfigError> {
    let bad = || ConfigError::BadNet(text.to_string());
    let mut tap = None;
    let mut mac = None;
    for part in text.split(',') {
        match part.split_once('=') {
            Some(("tap", name)) if !name.is_empty() && tap.is_none() => tap = Some(name),
            Some(("mac", address)) if mac.is_none() => {
                mac = Some(parse_mac(address).ok_or_else(bad)?)
            }
            _ => return Err(bad()),
        }
    }
    Ok(NetArg {
        tap: tap.ok_or_else(bad)?.to_string(),
        mac,
    })
}

/// "52:54:00:12:34:56": six hex bytes; a unicast address (bit 0 of the first byte clear).
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    (parts.next().is_none() && mac[0] & 1 == 0).then_some(mac)
}
