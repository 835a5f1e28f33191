//! The `mini-kvm` command line (clap): the subcommands and their options, and the one
//! conversion of `mini-kvm run`'s options into the library's run configuration
//! ([`RunArgs::into_config`]). A new option of `run` is written in three places: its field
//! here, its line in `into_config`, and its field in `RunConfig` or `VmConfig` (src/config.rs,
//! with its default).

use std::io::IsTerminal;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use mini_kvm::config::{
    ConfigError, DiskArg, GdbAddress, GuestImage, ModeArg, NetArg, OutputStyle, RunConfig,
    SnapshotMoment, SnapshotRequest, VmConfig, flat_mode, parse_cpus, parse_disk, parse_gdb,
    parse_memory_size, parse_mode, parse_net, parse_timeout, use_colour,
};
use mini_kvm::loader::builtin::builtin_guest;
use mini_kvm::terminal;

#[derive(Parser)]
#[command(
    name = "mini-kvm",
    version,
    about = "A small, readable x86 virtual machine monitor on the Linux KVM API",
    after_help = "Examples:\n  mini-kvm list\n  mini-kvm run hello\n  mini-kvm run --stats multiplication\n  echo hi | mini-kvm run echo\n  mini-kvm run hello counter fibonacci matrix\n  mini-kvm run --tui hello counter multiplication fibonacci\n  mini-kvm run --mem 2M --timeout 5 ./my-guest.bin"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run guests: built-in ones by name, image files by path (a flat binary, an ELF32 or ELF64
    /// kernel, a PVH or multiboot kernel, a Linux bzImage; told apart by content). Several
    /// guests run at once, each in its own VM.
    #[command(after_help = "\
Examples:
  mini-kvm run hello                       a built-in guest (see `mini-kvm list`)
  mini-kvm run ./guest.bin                 a flat binary, loaded at 0x10000 in real mode
  mini-kvm run hello counter fibonacci     three guests at once, lines labelled [1:hello] ...
  mini-kvm run --tui hello matrix echo     a split-screen view, one pane per guest
  mini-kvm run --display mandelbrot        the guest's screen, live in the terminal
  mini-kvm run --input 2 hello echo        stdin goes to guest 2 (echo)
  mini-kvm run --verbose counter           trace every VM exit on stderr
  mini-kvm run --stats matrix              exit statistics on stderr at the end
  mini-kvm run --mem 4M --timeout 2.5 x.bin
  mini-kvm run interrupts                  timer ticks, then type a line (Ctrl-A x quits)
  mini-kvm run --mode protected ./pm.bin   a flat binary in 32-bit protected mode
  mini-kvm run --mode long ./lm.bin        a flat binary in 64-bit long mode
  mini-kvm run --irqchip ./timer.bin       real mode with the PIC and the PIT
  mini-kvm run --mem 4M --cmdline \"debug\" ./kernel.elf   a multiboot or PVH kernel
  mini-kvm run --mem 256M --initrd initrd.cpio.gz /boot/vmlinuz-6.1.0-57-amd64   Linux

The exit status is the guest's EXIT status (with several guests: the first non-zero one); see
the README for the others (124 timeout, 125 triple fault, 126 KVM internal error, 127 unhandled
exit, 130 stopped from the --tui view).")]
    Run(Box<RunArgs>),
    /// Go on with a guest saved by mini-kvm run --snapshot DIR (and its moment), in
    /// this new process, exactly where it stopped, with stdin as its input (e.g. mini-kvm
    /// restore snap). The exit status is the guest's, as with run.
    Restore(RestoreArgs),
    /// List the built-in guests and what each demonstrates (e.g. mini-kvm list).
    List,
    /// Write an initramfs for Linux guests: a static busybox and an /init that starts a shell on
    /// the console (e.g. mini-kvm initramfs -o initrd.cpio, then mini-kvm run --mem 256M
    /// --initrd initrd.cpio /boot/vmlinuz-$(uname -r)).
    Initramfs {
        /// A statically linked busybox (Debian and Ubuntu: apt install busybox-static).
        #[arg(long, value_name = "FILE", default_value = "/bin/busybox")]
        busybox: std::path::PathBuf,
        /// Where to write the archive (e.g. -o initrd.cpio).
        #[arg(short, long, value_name = "FILE")]
        output: std::path::PathBuf,
        /// A kernel's module directory: adds the drivers of mini-kvm's virtio devices (--disk,
        /// --rng) and what they need, which /init loads (e.g. --modules
        /// /lib/modules/$(uname -r); Debian's kernels build them as modules).
        #[arg(long, value_name = "DIR")]
        modules: Option<std::path::PathBuf>,
    },
    /// Measure mini-kvm on this machine: exit round trip, start-up, memory, VM churn, scaling,
    /// compute and exit counts, each against a baseline measured in the same run (a bare
    /// kvm-ioctls VMM, QEMU when installed, native code). Takes about a minute; --quick, a few
    /// seconds (e.g. mini-kvm bench --out bench-results).
    Bench {
        /// Fewer repetitions: checks that everything runs, figures not worth quoting.
        #[arg(long)]
        quick: bool,
        /// Also write the results to DIR as bench.md, bench.json and bench.svg (a chart of the
        /// ratios) (e.g. --out bench-results).
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
    },
    /// Write the ELF file with a built-in guest's symbols, for gdb (the teaching OS's kernel:
    /// mini-kvm symbols os -o os.elf, then gdb os.elf -ex 'target remote SOCKET' with the
    /// socket that mini-kvm run --gdb os prints).
    Symbols {
        /// A built-in guest that has symbols (os).
        #[arg(value_name = "GUEST")]
        guest: String,
        /// Where to write it (e.g. -o os.elf).
        #[arg(short, long, value_name = "FILE")]
        output: std::path::PathBuf,
    },
    /// The floor of the start-up benchmark: runs `hello` in a bare kvm-ioctls VMM.
    #[command(name = "bench-floor", hide = true)]
    BenchFloor,
}

// `mini-kvm run`'s options (its help text is the `Run` command's, above).
#[derive(Args)]
pub struct RunArgs {
    /// Built-in guest names or paths of image files (e.g. hello ./guest.bin ./kernel.elf);
    /// up to 64.
    #[arg(required = true, value_name = "GUEST")]
    guests: Vec<String>,

    /// Guest RAM for each guest: bytes, or a number with K, M or G (e.g. --mem 1M, --mem 64M).
    /// Default: 1M (16M for the teaching OS, `os`).
    #[arg(long, value_name = "SIZE", value_parser = parse_memory_size)]
    mem: Option<u64>,

    /// vCPUs per guest, 1 to what the host's KVM allows (e.g. --cpus 4). The first CPU
    /// starts the guest; the others wait for the INIT and SIPI it sends them, as on a PC
    /// (e.g. mini-kvm run --cpus 4 smp). Default: 1.
    #[arg(long, value_name = "N", value_parser = parse_cpus, default_value = "1")]
    cpus: usize,

    /// Stop a guest still running after SECONDS (e.g. --timeout 1, --timeout 0.5); its
    /// status is then 124.
    #[arg(long, value_name = "SECONDS", value_parser = parse_timeout)]
    timeout: Option<Duration>,

    /// Trace every VM exit on stderr: reason, CS:IP/RIP, the instruction decoded, and for
    /// port I/O the port, direction, size and data (e.g. mini-kvm run --verbose hello).
    #[arg(short, long)]
    verbose: bool,

    /// At the end, print on stderr a table of VM exits by reason and by port, and the time in
    /// the guest vs in the VMM (e.g. mini-kvm run --stats hello).
    #[arg(long)]
    stats: bool,

    /// With several guests, print their output as it comes, without labels, as the original
    /// Mini-KVM did (e.g. mini-kvm run --raw hello counter).
    #[arg(long, conflicts_with = "tui")]
    raw: bool,

    /// Show a split-screen view: one pane per guest with its output, state and VM exits
    /// (e.g. mini-kvm run --tui hello counter). Keys: Tab/arrows move, PgUp/PgDn scroll,
    /// Ctrl-Q quits; other keys go to the focused guest.
    #[arg(long)]
    tui: bool,

    /// Never colour the guest labels (e.g. mini-kvm run --no-color hello counter); the
    /// NO_COLOR environment variable does the same.
    #[arg(long = "no-color")]
    no_color: bool,

    /// Give stdin to guest N, counting from 1 (e.g. mini-kvm run --input 2 hello echo); the
    /// others see end of input at once. Default: the first guest.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    input: u16,

    /// The CPU mode a flat binary starts in: real (16-bit, the default), protected (32-bit,
    /// flat segments) or long (64-bit, identity-mapped); loaded at 0x10000 in every mode
    /// (e.g. mini-kvm run --mode protected ./pm.bin). Kernels (ELF, multiboot) start in the
    /// mode their format defines.
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    mode: Option<ModeArg>,

    /// With --mode protected: turn paging on, with 4 MiB pages mapping RAM at 0 and again at
    /// 0x80000000 (e.g. mini-kvm run --mode protected --paging ./pg.bin). Needs a host KVM
    /// with 32-bit paging: kvm_intel or kvm_amd, not kvm_pvm.
    #[arg(long)]
    paging: bool,

    /// Give a real-mode flat binary the in-kernel interrupt controller (PIC, IOAPIC, local
    /// APIC) and the PIT timer; every other guest has them anyway (e.g. mini-kvm run
    /// --irqchip ./timer.bin).
    #[arg(long)]
    irqchip: bool,

    /// The command line of a multiboot, PVH or Linux kernel, handed over in its boot
    /// information; a Linux kernel without one gets "console=ttyS0 panic=-1
    /// reboot=panic_warm" (e.g.
    /// mini-kvm run --mem 4M --cmdline "console=ttyS0 debug" ./kernel.elf).
    #[arg(long, value_name = "TEXT")]
    cmdline: Option<String>,

    /// The initramfs of a Linux kernel (a bzImage, or a vmlinux with a PVH entry), loaded at
    /// the top of the RAM below 3 GiB (e.g.
    /// mini-kvm run --mem 256M --initrd initrd.cpio.gz /boot/vmlinuz-6.1.0-57-amd64).
    #[arg(long, value_name = "FILE")]
    initrd: Option<std::path::PathBuf>,

    /// A virtio-blk disk on a raw image file; add ,ro for a read-only one; give it again for
    /// more disks (e.g. mini-kvm run --disk disk.img os; truncate -s 64M disk.img makes an
    /// empty one). The image is locked while the guest runs.
    #[arg(long, value_name = "FILE[,ro]", value_parser = parse_disk)]
    disk: Vec<DiskArg>,

    /// A virtio-net network card on the host's TAP device NAME, created if it does not exist
    /// (that needs root or CAP_NET_ADMIN); ,mac= fixes its address (default: random) (e.g.
    /// sudo mini-kvm run --net tap=tap0 --initrd initrd.cpio ./bzImage, then on the host: ip
    /// addr add 10.0.2.1/24 dev tap0; ip link set tap0 up).
    #[arg(long, value_name = "tap=NAME[,mac=MAC]", value_parser = parse_net)]
    net: Vec<NetArg>,

    /// A virtio-rng entropy device, fed from the host's getrandom (e.g. mini-kvm run --rng os).
    #[arg(long)]
    rng: bool,

    /// Wait for gdb before the guest's first instruction, on a Unix socket only you can use:
    /// --gdb alone makes one in a new private directory and prints its path, --gdb=PATH makes
    /// it at PATH (mode 0600); --gdb=tcp:PORT listens on 127.0.0.1 instead, where any user of
    /// the machine can connect (0 picks a free port). With several guests, guest N gets a
    /// directory of its own, PATH.N or PORT+N-1 (e.g. mini-kvm run --gdb hello, then the gdb
    /// command it prints).
    #[arg(
        long,
        value_name = "PATH|tcp:PORT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "",
        value_parser = parse_gdb,
        conflicts_with = "tui"
    )]
    gdb: Option<GdbAddress>,

    /// At the end, write the VGA text screen (80x25 at 0xB8000: characters, colours, the
    /// cursor set through ports 0x3D4/0x3D5) to FILE as text; one guest only (e.g. mini-kvm
    /// run --screen-dump screen.txt vga_text).
    #[arg(long, value_name = "FILE")]
    screen_dump: Option<std::path::PathBuf>,

    /// Show each guest's screen in the terminal, live: VGA text in colour, a framebuffer in
    /// half-block characters; with several guests, side by side (e.g. mini-kvm run --display
    /// mandelbrot). Keys as with --tui, and Ctrl-S saves the focused guest's screen.
    #[arg(long, conflicts_with_all = ["raw", "gdb"])]
    display: bool,

    /// At the end, write the graphics screen (the Bochs VBE framebuffer) to FILE as a PNG
    /// image; one guest only (e.g. mini-kvm run --screenshot mandelbrot.png mandelbrot).
    #[arg(long, value_name = "FILE")]
    screenshot: Option<std::path::PathBuf>,

    /// Make every write to the UART and the debug console a VM exit of its own, instead of
    /// queueing them on KVM's coalesced-I/O ring (e.g. mini-kvm run --no-coalesce --stats
    /// hello counts 13 exits instead of 2).
    #[arg(long = "no-coalesce")]
    no_coalesce: bool,

    /// Save the guest to a snapshot (the directory --snapshot names) at the first VM exit after
    /// its output has shown TEXT, and stop there with status 0; mini-kvm restore DIR goes on
    /// from that point. One guest with one vCPU and no virtio devices, display or gdb
    /// (docs/snapshot.md) (e.g. mini-kvm run --snapshot-on-output 'Result: 100' --snapshot snap
    /// os).
    #[arg(long, value_name = "TEXT", requires = "snapshot")]
    snapshot_on_output: Option<String>,

    /// Save the guest to a snapshot at its Nth VM exit instead, and stop there with status 0
    /// (e.g. mini-kvm run --snapshot-after-exits 100 --snapshot snap multiplication).
    #[arg(
        long,
        value_name = "N",
        requires = "snapshot",
        conflicts_with = "snapshot_on_output",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    snapshot_after_exits: Option<u64>,

    /// The directory a snapshot is saved to (with --snapshot-on-output or
    /// --snapshot-after-exits), created if needed; its state.json and ram are replaced.
    #[arg(long, value_name = "DIR")]
    snapshot: Option<std::path::PathBuf>,

    /// Run without the seccomp filters that limit each thread to the system calls it needs
    /// once the guest runs (docs/security.md); for debugging mini-kvm itself.
    #[arg(long = "no-seccomp")]
    no_seccomp: bool,
}

// `mini-kvm restore`'s options.
#[derive(Args)]
pub struct RestoreArgs {
    /// The snapshot's directory (its state.json and ram).
    #[arg(value_name = "DIR")]
    pub dir: std::path::PathBuf,

    /// Stop the guest still running after SECONDS, as with run (e.g. --timeout 5).
    #[arg(long, value_name = "SECONDS", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,

    /// Trace every VM exit on stderr, as with run.
    #[arg(short, long)]
    verbose: bool,

    /// Run without the seccomp filters, as with run.
    #[arg(long = "no-seccomp")]
    no_seccomp: bool,
}

impl RestoreArgs {
    /// The machine options a restored guest runs with; the machine itself is the snapshot's.
    pub fn vm_config(&self) -> VmConfig {
        VmConfig {
            verbose: self.verbose,
            seccomp: !self.no_seccomp,
            ..VmConfig::default()
        }
    }
}

impl RunArgs {
    /// The run configuration these options ask for, checked: each option goes to its place
    /// in `RunConfig` or its `VmConfig` here, and nowhere else.
    pub fn into_config(self) -> Result<RunConfig, ConfigError> {
        // `--gdb VALUE`, with a space, leaves --gdb bare (its value needs '=') and makes VALUE
        // the first guest: when no guest or file has that name, say what was probably meant
        // instead of "unknown guest" or "cannot read guest image".
        if let (Some(GdbAddress::Private), Some(first)) = (&self.gdb, self.guests.first())
            && builtin_guest(first).is_none()
            && !std::path::Path::new(first).exists()
        {
            let meant = if first.bytes().all(|b| b.is_ascii_digit()) {
                format!("--gdb=tcp:{first} for that TCP port")
            } else {
                format!("--gdb={first} for a socket at that path")
            };
            return Err(ConfigError::GdbValueWithoutEquals {
                value: first.clone(),
                meant,
            });
        }
        let guests = self
            .guests
            .iter()
            .map(|guest| GuestImage::resolve(guest))
            .collect::<Result<Vec<_>, _>>()?;
        let mode = flat_mode(self.mode, self.paging)?;
        let output = match (self.raw, self.tui || self.display) {
            (_, true) => OutputStyle::Tui,
            (true, false) => OutputStyle::Raw,
            (false, false) => OutputStyle::Lines,
        };
        let moment = match (self.snapshot_on_output, self.snapshot_after_exits) {
            (Some(text), _) => Some(SnapshotMoment::Output(text)),
            (None, Some(count)) => Some(SnapshotMoment::Exits(count)),
            (None, None) => None,
        };
        let snapshot = match (moment, self.snapshot) {
            (Some(moment), Some(dir)) => Some(SnapshotRequest { moment, dir }),
            (None, Some(_)) => return Err(ConfigError::SnapshotWithoutMoment),
            // clap requires --snapshot with a moment.
            (_, None) => None,
        };
        let no_color_env = std::env::var("NO_COLOR").ok();
        let config = RunConfig {
            guests,
            vm: VmConfig {
                memory_size: self.mem,
                cpus: self.cpus,
                mode,
                irqchip: self.irqchip,
                cmdline: self.cmdline,
                initrd: self.initrd,
                disks: self.disk,
                nets: self.net,
                rng: self.rng,
                verbose: self.verbose,
                coalesce: !self.no_coalesce,
                // The vCPU that saves a snapshot creates and writes files, which its filter
                // forbids: a snapshotting run goes without the filters.
                seccomp: !self.no_seccomp && snapshot.is_none(),
                snapshot,
            },
            timeout: self.timeout,
            stats: self.stats,
            output,
            colour: use_colour(
                std::io::stdout().is_terminal(),
                self.no_color,
                no_color_env.as_deref(),
            ),
            input_guest: usize::from(self.input) - 1,
            gdb: self.gdb,
            display: self.display,
            screen_dump: self.screen_dump,
            screenshot: self.screenshot,
            // The --tui view owns the terminal itself.
            terminal: terminal::stdin_is_terminal() && output != OutputStyle::Tui,
        };
        config.validate()?;
        Ok(config)
    }
}
