//! The `mini-kvm` program: parse the command line (cli.rs) into a configuration, call the
//! library, and turn the result into an exit status (README: "Exit statuses").

mod cli;

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use clap::Parser;

use cli::{Cli, Command};
use mini_kvm::config::{OutputStyle, RunConfig};
use mini_kvm::console::{GuestInput, GuestIo, GuestOutput, stdout_sink};
use mini_kvm::loader::builtin_guests;
use mini_kvm::loader::initramfs;
use mini_kvm::output_file::{OutputFile, OutputFileError};
use mini_kvm::terminal::{self, TerminalInput};
use mini_kvm::vmm::group::{GuestResult, group_exit_code, summary_table};
use mini_kvm::vmm::kvm::HostKvm;
use mini_kvm::vmm::outcome::{GuestOutcome, exit_code};
use mini_kvm::vmm::seccomp;

fn main() -> ExitCode {
    // Before any thread starts: no allocation may ever make a call the filters forbid.
    mini_kvm::vmm::seccomp::prepare_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::List => {
            list();
            ExitCode::SUCCESS
        }
        Command::Bench { quick, out } => bench(quick, out.as_deref()),
        Command::Initramfs {
            busybox,
            output,
            modules,
        } => write_initramfs(&busybox, &output, modules.as_deref()),
        Command::Symbols { guest, output } => write_symbols(&guest, &output),
        Command::BenchFloor => {
            let hello = builtin_guests()
                .iter()
                .find(|guest| guest.name == "hello")
                .expect("hello is built in");
            match mini_kvm::bench::floor::run_to_stdout(hello.image) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(&error.to_string()),
            }
        }
        Command::Restore(args) => {
            let status = restore(&args);
            terminal::restore();
            status
        }
        Command::Run(args) => {
            let config = match args.into_config() {
                Ok(config) => config,
                Err(error) => return fail(&error.to_string()),
            };
            // Opened now: a file that cannot be written is an error before the guest runs, and
            // this thread may open no file once it runs vCPU 0 (seccomp).
            let screen_files = match ScreenFiles::create(&config) {
                Ok(files) => files,
                Err(error) => return fail(&error),
            };
            let status = run(&config, screen_files);
            // Whatever happened, the user's terminal leaves as it came.
            terminal::restore();
            status
        }
    }
}

fn write_initramfs(
    busybox: &std::path::Path,
    output: &std::path::Path,
    modules: Option<&std::path::Path>,
) -> ExitCode {
    let modules = match modules.map(initramfs::read_modules).transpose() {
        Ok(modules) => modules.unwrap_or_default(),
        Err(error) => return fail(&error.to_string()),
    };
    let archive = initramfs::read_busybox(busybox)
        .and_then(|bytes| initramfs::build(&busybox.display().to_string(), &bytes, &modules));
    let archive = match archive {
        Ok(archive) => archive,
        Err(error) => return fail(&error.to_string()),
    };
    if let Err(error) = write_new_file(output, &archive) {
        return fail(&error.to_string());
    }
    println!(
        "wrote {} ({} bytes): boot it with mini-kvm run --mem 256M --initrd {} /boot/vmlinuz-...",
        output.display(),
        archive.len(),
        output.display()
    );
    ExitCode::SUCCESS
}

fn write_symbols(name: &str, output: &std::path::Path) -> ExitCode {
    let with_symbols: Vec<&str> = builtin_guests()
        .iter()
        .filter(|guest| guest.symbols.is_some())
        .map(|guest| guest.name)
        .collect();
    let symbols = builtin_guests()
        .iter()
        .find(|guest| guest.name == name)
        .and_then(|guest| guest.symbols);
    let Some(symbols) = symbols else {
        return fail(&format!(
            "'{name}' is not a built-in guest with symbols (those are: {})",
            with_symbols.join(", ")
        ));
    };
    if let Err(error) = write_new_file(output, symbols) {
        return fail(&error.to_string());
    }
    println!(
        "wrote {} ({} bytes): gdb {} -ex 'target remote SOCKET' with the socket that mini-kvm run \
         --gdb {name} prints",
        output.display(),
        symbols.len(),
        output.display()
    );
    ExitCode::SUCCESS
}

/// Writes `bytes` to `path` as a new file renamed over it (src/output_file.rs): never through
/// a link, never a half-written file.
fn write_new_file(path: &std::path::Path, bytes: &[u8]) -> Result<(), OutputFileError> {
    let mut file = OutputFile::create(path)?;
    file.write_all(bytes)?;
    file.commit()
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

/// The files `--screen-dump` and `--screenshot` write at the end, created before the guest
/// runs: a file that cannot be written is an error before anything runs, and the thread that
/// runs vCPU 0 (or the view) may create no file once the guest runs (seccomp). Each is a new
/// file beside its target, renamed over it when complete (src/output_file.rs): a link another
/// user planted there is refused, and a run that fails leaves the target as it was.
struct ScreenFiles {
    dump: Option<OutputFile>,
    screenshot: Option<OutputFile>,
}

impl ScreenFiles {
    fn create(config: &RunConfig) -> Result<ScreenFiles, String> {
        let create = |option: &str,
                      path: &Option<std::path::PathBuf>|
         -> Result<Option<OutputFile>, String> {
            let Some(path) = path else {
                return Ok(None);
            };
            let file = OutputFile::create(path).map_err(|error| format!("{option}: {error}"))?;
            // The rename (or the removal) is made at the end, under the filter of the thread
            // that ends the run: it may make them in this directory.
            if config.vm.seccomp {
                seccomp::allow_replacing_files_in(file.directory())
                    .map_err(|error| error.to_string())?;
            }
            Ok(Some(file))
        };
        Ok(ScreenFiles {
            dump: create("--screen-dump", &config.screen_dump)?,
            screenshot: create("--screenshot", &config.screenshot)?,
        })
    }

    /// Writes the guest's screen as it was left (one guest: the options refuse several). A
    /// file not written is removed (dropped), and its target left as it was.
    fn write(self, results: &[GuestResult]) -> Result<(), String> {
        let Some(display) = results
            .first()
            .and_then(|result| result.report.as_ref().ok())
            .and_then(|report| report.display.as_ref())
        else {
            return Ok(());
        };
        if let Some(mut file) = self.dump {
            file.write_all(display.text_screen().dump().as_bytes())
                .and_then(|()| file.commit())
                .map_err(|error| format!("--screen-dump: {error}"))?;
        }
        if let Some(mut file) = self.screenshot {
            let Some(picture) = display.picture() else {
                return Err(format!(
                    "--screenshot: the guest left the screen in text mode, so nothing was \
                     written to {} (--screen-dump FILE writes a text screen)",
                    file.path().display()
                ));
            };
            file.write_all(&picture.png())
                .and_then(|()| file.commit())
                .map_err(|error| format!("--screenshot: {error}"))?;
        }
        Ok(())
    }
}

fn run(config: &RunConfig, screen_files: ScreenFiles) -> ExitCode {
    let cancel = AtomicBool::new(false);
    let results = if config.output == OutputStyle::Tui {
        mini_kvm::tui::run(config)
    } else {
        // From a terminal, the input goes through the Ctrl-A key filter (src/terminal.rs).
        let input = if config.terminal {
            GuestInput::from_fd(TerminalInput::stdin())
        } else {
            GuestInput::stdin()
        };
        let consoles = mini_kvm::shared_consoles(config, stdout_sink(), input);
        mini_kvm::run_guests(config, consoles, &cancel)
    };
    // Raw mode ends before the reports, so that they print as normal lines.
    terminal::restore();
    let results = match results {
        Ok(results) => results,
        Err(error) => return fail(&error.to_string()),
    };
    report(config, &results);
    if let Err(error) = screen_files.write(&results) {
        return fail(&error);
    }
    ExitCode::from(group_exit_code(&results))
}

/// Everything printed on stderr after the run: fault reports, unclaimed ports (--verbose),
/// statistics (--stats), and with several guests a summary table.
/// `mini-kvm restore DIR`: the saved guest, on with this process's stdin and stdout.
fn restore(args: &cli::RestoreArgs) -> ExitCode {
    let terminal_input = terminal::stdin_is_terminal();
    let input = if terminal_input {
        let input = GuestInput::from_fd(TerminalInput::stdin());
        input.on_keyboard_claimed(|| {
            terminal::enter_raw_mode();
        });
        input
    } else {
        GuestInput::stdin()
    };
    let io = GuestIo {
        output: GuestOutput::to_sink(stdout_sink(), None),
        input,
    };
    let cancel = AtomicBool::new(false);
    let result = mini_kvm::restore_guest(&args.dir, &args.vm_config(), args.timeout, io, &cancel);
    terminal::restore();
    let result = match result {
        Ok(result) => result,
        Err(error) => return fail(&error.to_string()),
    };
    match &result.report {
        Ok(report) => {
            if let Some(message) = report.outcome.report(&result.name) {
                let _ = writeln!(mini_kvm::console::stderr::stderr(), "{message}");
            }
        }
        Err(error) => return fail(&error.to_string()),
    }
    ExitCode::from(group_exit_code(std::slice::from_ref(&result)))
}

fn report(config: &RunConfig, results: &[GuestResult]) {
    let several = results.len() > 1;
    for (index, result) in results.iter().enumerate() {
        let label = if several {
            format!("[{}:{}] ", index + 1, result.name)
        } else {
            String::new()
        };
        let report = match &result.report {
            Ok(report) => report,
            Err(error) => {
                let _ = writeln!(
                    mini_kvm::console::stderr::stderr(),
                    "{label}mini-kvm: error: {error}"
                );
                continue;
            }
        };
        if let Some(message) = report.outcome.report(&result.name) {
            let _ = writeln!(mini_kvm::console::stderr::stderr(), "{message}");
        }
        if let Some(request) = &config.vm.snapshot
            && !matches!(
                report.outcome,
                GuestOutcome::Snapshotted(_) | GuestOutcome::SnapshotFailed(_)
            )
        {
            let _ = writeln!(
                mini_kvm::console::stderr::stderr(),
                "mini-kvm: guest '{}' ended before {}: no snapshot was taken",
                result.name,
                request.moment.describe()
            );
        }
        if config.vm.verbose {
            for (direction, accesses) in [("reads", "in"), ("writes", "out")] {
                for (port, count) in report.stats.unclaimed_ports(accesses) {
                    let _ = writeln!(
                        mini_kvm::console::stderr::stderr(),
                        "{label}unclaimed port {port:#06x}: {direction}: {count}"
                    );
                }
            }
        }
        if config.stats {
            let module = HostKvm::detect();
            let host = format!("{module} ({})", module.description());
            let _ = write!(
                mini_kvm::console::stderr::stderr(),
                "{}",
                report.stats.table(&result.name, &host)
            );
        }
    }
    if several {
        let _ = write!(
            mini_kvm::console::stderr::stderr(),
            "{}",
            summary_table(results, config.stats)
        );
    }
}

fn bench(quick: bool, out: Option<&std::path::Path>) -> ExitCode {
    let options = mini_kvm::bench::BenchOptions { quick };
    let report = match mini_kvm::bench::run(&options) {
        Ok(report) => report,
        Err(error) => return fail(&error.to_string()),
    };
    print!("{}", report.table());
    if let Some(dir) = out {
        // Each file as --screen-dump's: a new file renamed over the old, never through a link.
        let written = std::fs::create_dir_all(dir)
            .map_err(|error| error.to_string())
            .and_then(|()| {
                for (name, text) in [
                    ("bench.md", report.markdown()),
                    ("bench.json", report.json()),
                    ("bench.svg", report.svg()),
                ] {
                    write_new_file(&dir.join(name), text.as_bytes())
                        .map_err(|error| error.to_string())?;
                }
                Ok(())
            });
        if let Err(error) = written {
            return fail(&format!(
                "cannot write the results to {}: {error}",
                dir.display()
            ));
        }
        println!(
            "
written: {0}/bench.md, {0}/bench.json, {0}/bench.svg",
            dir.display()
        );
    }
    ExitCode::SUCCESS
}

fn fail(message: &str) -> ExitCode {
    let _ = writeln!(
        mini_kvm::console::stderr::stderr(),
        "mini-kvm: error: {message}"
    );
    ExitCode::from(exit_code::SETUP_ERROR)
}
