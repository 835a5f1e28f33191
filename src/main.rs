//! The `mini-kvm` command line: parse, build a configuration, call the library, and turn the
//! result into an exit status (README: "Exit statuses").

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use mini_kvm::config::{
    GuestImage, ModeArg, RunConfig, flat_mode, parse_memory_size, parse_mode, parse_timeout,
};
use mini_kvm::console::{GuestInput, GuestOutput};
use mini_kvm::loader::builtin_guests;
use mini_kvm::terminal::{self, TerminalInput};
use mini_kvm::vmm::exit::exit_code;
use mini_kvm::vmm::kvm;
use mini_kvm::vmm::vm::GuestIo;

#[derive(Parser)]
#[command(
    name = "mini-kvm",
    version,
    about = "A small, readable x86 virtual machine monitor on the Linux KVM API",
    after_help = "Examples:\n  mini-kvm list\n  mini-kvm run hello\n  mini-kvm run --stats multiplication\n  echo hi | mini-kvm run echo\n  mini-kvm run --mem 2M --timeout 5 ./my-guest.bin"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a guest: a built-in one by name, or an image file by path (a flat binary, an ELF32 or
    /// ELF64 kernel, a PVH or multiboot kernel; told apart by content).
    #[command(after_help = "\
Examples:
  mini-kvm run hello                       a built-in guest (see `mini-kvm list`)
  mini-kvm run ./guest.bin                 a flat binary, loaded at 0x10000 in real mode
  mini-kvm run --verbose counter           trace every VM exit on stderr
  mini-kvm run --stats matrix              exit statistics on stderr at the end
  mini-kvm run --mem 4M --timeout 2.5 x.bin
  mini-kvm run interrupts                  timer ticks, then type a line (Ctrl-A x quits)
  mini-kvm run --mode protected ./pm.bin   a flat binary in 32-bit protected mode
  mini-kvm run --mode long ./lm.bin        a flat binary in 64-bit long mode
  mini-kvm run --irqchip ./timer.bin       real mode with the PIC and the PIT
  mini-kvm run --mem 4M --cmdline \"debug\" ./kernel.elf   a multiboot or PVH kernel

The guest's EXIT status becomes mini-kvm's exit status; see the README for the others
(124 timeout, 125 triple fault, 126 KVM internal error, 127 unhandled exit).")]
    Run {
        /// A built-in guest's name, or the path of an image file (e.g. ./guest.bin, ./kernel.elf).
        guest: String,

        /// Guest RAM: bytes, or a number with K, M or G (e.g. --mem 1M, --mem 64M).
        #[arg(long, value_name = "SIZE", default_value = "1M", value_parser = parse_memory_size)]
        mem: u64,

        /// Stop the guest if it is still running after SECONDS (e.g. --timeout 1, --timeout 0.5);
        /// mini-kvm then exits with status 124.
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

        /// The command line of a multiboot or PVH kernel, handed over in its boot information
        /// (e.g. mini-kvm run --mem 4M --cmdline "console=ttyS0 debug" ./kernel.elf).
        #[arg(long, value_name = "TEXT")]
        cmdline: Option<String>,
    },
    /// List the built-in guests and what each demonstrates (e.g. mini-kvm list).
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::List => {
            list();
            ExitCode::SUCCESS
        }
        Command::Run {
            guest,
            mem,
            timeout,
            verbose,
            stats,
            mode,
            paging,
            irqchip,
            cmdline,
        } => {
            let guest = match GuestImage::resolve(&guest) {
                Ok(guest) => guest,
                Err(error) => return fail(&error.to_string()),
            };
            let mode = match flat_mode(mode, paging) {
                Ok(mode) => mode,
                Err(error) => return fail(&error.to_string()),
            };
            let config = RunConfig {
                memory_size: mem,
                timeout,
                verbose,
                stats,
                mode,
                irqchip,
                cmdline,
                terminal: terminal::stdin_is_terminal(),
                ..RunConfig::new(guest)
            };
            let status = run(&config);
            // Whatever happened, the user's terminal leaves as it came.
            terminal::restore();
            status
        }
    }
}

fn list() {
    let width = builtin_guests()
        .iter()
        .map(|g| g.name.len())
        .max()
        .unwrap_or(0);
    for guest in builtin_guests() {
        println!("{:<width$}  {}", guest.name, guest.summary);
    }
}

fn run(config: &RunConfig) -> ExitCode {
    // From a terminal, the input goes through the Ctrl-A key filter (src/terminal.rs).
    let input = if config.terminal {
        GuestInput::from_reader(Box::new(TerminalInput::stdin()))
    } else {
        GuestInput::stdin()
    };
    let io = GuestIo {
        output: GuestOutput::stdout(),
        input,
    };
    let name = config.guest.name();
    let report = match mini_kvm::run_guest(config, io) {
        Ok(report) => report,
        Err(error) => {
            terminal::restore();
            return fail(&error.to_string());
        }
    };
    terminal::restore();
    if let Some(message) = report.outcome.report(&name) {
        eprintln!("{message}");
    }
    if config.verbose {
        let unclaimed = &report.unclaimed;
        for (direction, counts) in [("reads", &unclaimed.reads), ("writes", &unclaimed.writes)] {
            for (port, count) in counts {
                eprintln!("unclaimed port {port:#06x}: {direction}: {count}");
            }
        }
    }
    if config.stats {
        let module = kvm::host_kvm_module();
        let host = format!("{module} ({})", kvm::describe_kvm_module(module));
        eprint!("{}", report.stats.table(&name, &host));
    }
    ExitCode::from(report.outcome.exit_code())
}

fn fail(message: &str) -> ExitCode {
    eprintln!("mini-kvm: error: {message}");
    ExitCode::from(exit_code::SETUP_ERROR)
}
