//! `mini-kvm bench`: measures mini-kvm on the user's own machine, each figure beside a baseline
//! measured in the same run — the bare kvm-ioctls floor, QEMU when it is installed, or native
//! code — and prints a table (Markdown, JSON and an SVG chart of the ratios with `--out DIR`).
//! Nothing here is a pass/fail test: the targets are reported as met or missed.

pub mod disk;
pub mod floor;
pub mod measure;
pub mod qemu;
pub mod report;

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use kvm_ioctls::Kvm;
use thiserror::Error;

use crate::config::{GuestImage, RunConfig};
use crate::console::{GuestInput, GuestIo, GuestOutput};
use crate::loader::{builtin_guest, builtin_guests};
use crate::vmm::kvm::HostKvm;
use crate::vmm::vm::{RunReport, VmError};
use floor::BareVm;
use measure::{ProcessRun, Sample, ms, time_process};
use qemu::Qemu;
use report::{Figure, Report, Row, Target};

include!(concat!(env!("OUT_DIR"), "/bench_guests.rs"));

#[derive(Debug, Error)]
pub enum BenchError {
    #[error("{call} failed: {source}")]
    Kvm {
        call: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("{0}")]
    Setup(&'static str),
    #[error("a benchmark guest misbehaved: {0}")]
    Guest(String),
    #[error("the bare VMM (examples/minimal.rs) failed: {0}")]
    Floor(String),
    #[error("cannot start {command}: {source}")]
    Spawn { command: String, source: io::Error },
    #[error("cannot wait for {command}: {source}")]
    Wait { command: String, source: io::Error },
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Vm(#[from] VmError),
}

/// `mini-kvm bench`'s options.
pub struct BenchOptions {
    /// Fewer repetitions: a shape check for CI, not figures to quote.
    pub quick: bool,
}

/// How many times each timing is repeated, and how big the loops are.
struct Effort {
    runs: usize,
    churn_vms: usize,
    native_repeats: u32,
}

impl Effort {
    fn of(options: &BenchOptions) -> Effort {
        if options.quick {
            Effort {
                runs: 3,
                churn_vms: 10,
                native_repeats: 200,
            }
        } else {
            Effort {
                runs: 11,
                churn_vms: 200,
                native_repeats: 20_000,
            }
        }
    }
}

/// The benchmark programs, written to a scratch directory (QEMU and child processes need files).
struct Programs {
    dir: PathBuf,
}

impl Programs {
    fn write() -> Result<Programs, BenchError> {
        Programs::write_in(&std::env::temp_dir())
    }

    fn write_in(parent: &Path) -> Result<Programs, BenchError> {
        // The paths go on command lines as text (the `expect`s on `to_str` rely on this check).
        if parent.to_str().is_none() {
            return Err(BenchError::Setup(
                "the temporary directory's path is not UTF-8: set TMPDIR to a plain path",
            ));
        }
        // A new directory of our own: the files are written inside it without further checks.
        // (Made a `Programs` at once, so that its drop removes the directory on any error.)
        let programs = Programs {
            dir: private_temp_dir(parent, "mini-kvm-bench-")?,
        };
        for (name, image) in BENCH_GUESTS {
            let extension = if image.starts_with(b"\x7fELF") {
                "elf"
            } else {
                "bin"
            };
            std::fs::write(programs.path(&format!("{name}.{extension}")), image)?;
        }
        Ok(programs)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn image(name: &str) -> &'static [u8] {
        BENCH_GUESTS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, image)| *image)
            .expect("build.rs builds every benchmark guest")
    }
}

/// Makes a new directory in `parent` (/tmp, shared with every user), named `PREFIX` and six
/// random characters, mode 0700: `mkdtemp` fails rather than take a name that exists, so no
/// other user can have made it in advance (with links in it to the runner's files), nor look
/// into it.
fn private_temp_dir(parent: &Path, prefix: &str) -> io::Result<PathBuf> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut template = parent
        .join(format!("{prefix}XXXXXX"))
        .into_os_string()
        .into_vec();
    template.push(0);
    // SAFETY: a NUL-terminated buffer that mkdtemp rewrites in place (the Xs), nothing longer.
    if unsafe { libc::mkdtemp(template.as_mut_ptr().cast()) }.is_null() {
        return Err(io::Error::last_os_error());
    }
    template.pop();
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(&template)))
}

impl Drop for Programs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs every measurement and returns the report.
pub fn run(options: &BenchOptions) -> Result<Report, BenchError> {
    let effort = Effort::of(options);
    let programs = Programs::write()?;
    let exe = std::env::current_exe()?;
    let qemu = Qemu::find();
    let kvm = crate::vmm::kvm::open_kvm().map_err(VmError::from)?;

    let mut rows = Vec::new();
    rows.extend(exit_round_trip(&kvm, &programs, &effort)?);
    rows.extend(start_up(&exe, &programs, qemu.as_ref(), &effort)?);
    rows.extend(memory(&exe, &programs, qemu.as_ref())?);
    rows.extend(vm_churn(&kvm, &effort)?);
    rows.extend(scaling(&effort)?);
    rows.extend(smp_scaling(&effort)?);
    rows.extend(compute(&exe, &programs, qemu.as_ref(), &effort)?);
    rows.extend(exit_counts());
    rows.extend(disk::virtio_blk(
        &exe,
        &programs.dir,
        effort.runs,
        options.quick,
    )?);
    Ok(Report {
        header: header(options, qemu.as_ref()),
        rows,
    })
}

fn header(options: &BenchOptions, qemu: Option<&Qemu>) -> Vec<String> {
    let module = HostKvm::detect();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split(':')
                    .nth(1)
                    .map(str::trim)
                    .map(String::from)
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut lines = vec![
        format!("host KVM module: {module} ({})", module.description()),
        format!("CPU: {cpu}, {cores} cores"),
        format!("mini-kvm {}", env!("CARGO_PKG_VERSION")),
        format!(
            "QEMU: {}",
            qemu.map_or("not installed".to_string(), |q| q.version.clone())
        ),
        format!(
            "mode: {}",
            if options.quick {
                "--quick (3 runs per figure: a shape check, not figures to quote)"
            } else {
                "full (11 runs per figure)"
            }
        ),
    ];
    if module == HostKvm::Pvm {
        lines.push(
            "NOTE: kvm_pvm runs every guest instruction in KVM's instruction emulator: guest \
             compute and exit figures here are emulator figures, not hardware figures"
                .to_string(),
        );
    }
    lines
}

/// Runs one guest in this process, its output discarded; checks its status.
fn run_in_process(
    guest: GuestImage,
    memory_size: u64,
    input: &[u8],
    expected_status: u8,
) -> Result<RunReport, BenchError> {
    let mut config = RunConfig::new(vec![guest]);
    config.vm.memory_size = Some(memory_size);
    config.timeout = Some(Duration::from_secs(60));
    run_many_in_process(&config, input, expected_status).map(|mut reports| reports.remove(0))
}

fn run_many_in_process(
    config: &RunConfig,
    input: &[u8],
    expected_status: u8,
) -> Result<Vec<RunReport>, BenchError> {
    let consoles = config
        .guests
        .iter()
        .map(|_| GuestIo {
            output: GuestOutput::to_writer(Box::new(io::sink())),
            input: GuestInput::from_memory(io::Cursor::new(input.to_vec())),
        })
        .collect();
    let results = crate::run_guests(config, consoles, &AtomicBool::new(false))?;
    results
        .into_iter()
        .map(|result| {
            let report = result.report?;
            let status = report.outcome.exit_code();
            if status != expected_status {
                return Err(BenchError::Guest(format!(
                    "{} ended with status {status} ({}), expected {expected_status}",
                    result.name,
                    report.outcome.short_description()
                )));
            }
            Ok(report)
        })
        .collect()
}

fn builtin(name: &str) -> GuestImage {
    GuestImage::Builtin(builtin_guest(name).expect("a built-in guest the benchmarks use"))
}

// ---- exit round trip -------------------------------------------------------------------------

fn exit_round_trip(
    kvm: &Kvm,
    programs: &Programs,
    effort: &Effort,
) -> Result<Vec<Row>, BenchError> {
    let group = "exit round trip";
    let guest = GuestImage::File(programs.path("exits.bin"));
    let vmm = Sample::repeat(effort.runs, || {
        let report = run_in_process(guest.clone(), 1 << 20, b"", 0)?;
        Ok(report.stats.total.as_secs_f64() * 1e6 / report.stats.total_exits() as f64)
    })?;
    let floor = Sample::repeat(effort.runs, || {
        let mut vm = BareVm::new(kvm, Programs::image("exits")).map_err(BenchError::Floor)?;
        let (elapsed, exits) = vm.run(&mut io::sink()).map_err(BenchError::Floor)?;
        Ok(elapsed.as_secs_f64() * 1e6 / exits as f64)
    })?;
    Ok(vec![
        Row::new(group, "mini-kvm hypercall (CLOCK), per exit", "us", Ok(vmm))
            .against("bare kvm-ioctls loop", Ok(floor))
            .target(Target::AtMost(1.05)),
    ])
}

// ---- start-up --------------------------------------------------------------------------------

fn process_sample(
    runs: usize,
    mut command: impl FnMut() -> Command,
    pick: impl Fn(&ProcessRun) -> Option<f64>,
) -> Result<Sample, BenchError> {
    Sample::repeat(runs, || {
        let run = time_process(&mut command(), b"")?;
        pick(&run).ok_or_else(|| BenchError::Guest(format!("{:?} printed nothing", command())))
    })
}

fn first_byte_ms(run: &ProcessRun) -> Option<f64> {
    run.first_byte.map(ms)
}

fn exit_ms(run: &ProcessRun) -> Option<f64> {
    Some(ms(run.total))
}

fn mini_kvm(exe: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(exe);
    command.args(args);
    command
}

fn start_up(
    exe: &Path,
    programs: &Programs,
    qemu: Option<&Qemu>,
    effort: &Effort,
) -> Result<Vec<Row>, BenchError> {
    let group = "start-up";
    let runs = effort.runs;
    let hello: &[&str] = &["run", "hello"];
    let hello_plain: &[&str] = &["run", "--no-coalesce", "hello"];
    let floor = || mini_kvm(exe, &["bench-floor"]);
    let kernel = programs.path("hello_pvh.elf");
    let kernel_arg = kernel
        .to_str()
        .expect("Programs::write checked the path is UTF-8");
    let pvh = || mini_kvm(exe, &["run", "--mem", "2M", kernel_arg]);

    let mut rows = Vec::new();
    for (what, pick) in [
        (
            "first output byte",
            first_byte_ms as fn(&ProcessRun) -> Option<f64>,
        ),
        ("process exit", exit_ms),
    ] {
        let floor_figure = process_sample(runs, floor, pick)?;
        for (name, args) in [
            ("run hello", hello),
            ("run --no-coalesce hello", hello_plain),
        ] {
            // Registering the coalesced-I/O zones starts an SRCU grace period in KVM that a VM
            // destroyed within ~20 ms waits for at exit: the second row shows what that costs.
            rows.push(
                Row::new(
                    group,
                    format!("mini-kvm {name}: {what}"),
                    "ms",
                    Ok(process_sample(runs, || mini_kvm(exe, args), pick)?),
                )
                .against("bare kvm-ioctls VMM (same process start)", Ok(floor_figure))
                .target(Target::AtMost(1.5)),
            );
        }
        let ours = process_sample(runs, pvh, pick)?;
        for (accel, target) in [("kvm", Some(Target::AtMost(0.2))), ("tcg", None)] {
            let theirs: Figure = match qemu {
                Some(qemu) => Ok(process_sample(runs, || qemu.microvm(accel, &kernel), pick)?),
                None => Err("not installed".into()),
            };
            let mut row = Row::new(
                group,
                format!("mini-kvm, PVH hello kernel: {what}"),
                "ms",
                Ok(ours),
            )
            .against(
                format!("QEMU -M microvm -accel {accel}, same kernel"),
                theirs,
            );
            if let Some(target) = target {
                row = row.target(target);
            }
            rows.push(row);
        }
    }
    Ok(rows)
}

// ---- memory ------------------------------------------------------------------------------------

fn peak_mib(mut command: Command, input: &[u8]) -> Result<Figure, BenchError> {
    let run = time_process(&mut command, input)?;
    Ok(Ok(Sample::of(vec![run.max_rss_kib as f64 / 1024.0])))
}

fn memory(exe: &Path, programs: &Programs, qemu: Option<&Qemu>) -> Result<Vec<Row>, BenchError> {
    let group = "memory (peak RSS)";
    let kernel = programs.path("hello_pvh.elf");
    let kernel_arg = kernel
        .to_str()
        .expect("Programs::write checked the path is UTF-8");
    let mut rows = vec![
        Row::new(
            group,
            "mini-kvm run hello",
            "MiB",
            peak_mib(mini_kvm(exe, &["run", "hello"]), b"")?,
        )
        .against(
            "bare kvm-ioctls VMM",
            peak_mib(mini_kvm(exe, &["bench-floor"]), b"")?,
        )
        .target(Target::ValueBelow(2.5)),
    ];
    let theirs = match qemu {
        Some(qemu) => peak_mib(qemu.microvm("kvm", &kernel), b"")?,
        None => Err("not installed".into()),
    };
    rows.push(
        Row::new(
            group,
            "mini-kvm, PVH hello kernel",
            "MiB",
            peak_mib(mini_kvm(exe, &["run", "--mem", "2M", kernel_arg]), b"")?,
        )
        .against("QEMU -M microvm -accel kvm, same kernel", theirs),
    );
    let os: Figure = if builtin_guest("os").is_some() {
        peak_mib(mini_kvm(exe, &["run", "os"]), b"0\n")?
    } else {
        Err("no `os` guest in this build".into())
    };
    rows.push(Row::new(group, "mini-kvm run os (menu, then 0)", "MiB", os));
    let mut matrices = vec!["run"];
    matrices.extend(std::iter::repeat_n("matrix", 32));
    rows.push(Row::new(
        group,
        "mini-kvm run matrix x 32 (32 VMs)",
        "MiB",
        peak_mib(mini_kvm(exe, &matrices), b"")?,
    ));
    Ok(rows)
}

// ---- VM churn ----------------------------------------------------------------------------------

fn vm_churn(kvm: &Kvm, effort: &Effort) -> Result<Vec<Row>, BenchError> {
    let count = effort.churn_vms;
    let rate =
        |mut one: Box<dyn FnMut() -> Result<(), BenchError> + '_>| -> Result<Sample, BenchError> {
            Sample::repeat(effort.runs, || {
                let started = Instant::now();
                for _ in 0..count {
                    one()?;
                }
                Ok(count as f64 / started.elapsed().as_secs_f64())
            })
        };
    let ours = rate(Box::new(|| {
        run_in_process(builtin("minimal"), 1 << 20, b"", 0).map(drop)
    }))?;
    let bare = rate(Box::new(|| {
        let image = builtin_guest("minimal").expect("built in").image;
        let mut vm = BareVm::new(kvm, image).map_err(BenchError::Floor)?;
        vm.run(&mut io::sink()).map(drop).map_err(BenchError::Floor)
    }))?;
    Ok(vec![
        Row::new(
            "VM churn",
            "create, run, destroy `minimal`",
            "VMs/s",
            Ok(ours),
        )
        .against("bare kvm-ioctls", Ok(bare)),
    ])
}

// ---- scaling -----------------------------------------------------------------------------------

fn scaling(effort: &Effort) -> Result<Vec<Row>, BenchError> {
    let group = "scaling (matrix)";
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut rows = Vec::new();
    for n in [1usize, 2, 4] {
        let config = RunConfig::new((0..n).map(|_| builtin("matrix")).collect());
        let together = Sample::repeat(effort.runs, || {
            let started = Instant::now();
            run_many_in_process(&config, b"", 0)?;
            Ok(ms(started.elapsed()))
        })?;
        let one_after_another = Sample::repeat(effort.runs, || {
            let started = Instant::now();
            for _ in 0..n {
                run_in_process(builtin("matrix"), 1 << 20, b"", 0)?;
            }
            Ok(ms(started.elapsed()))
        })?;
        let efficiency = one_after_another.median / together.median / n as f64;
        rows.push(
            Row::new(
                group,
                format!("{n} at once ({cores} host cores)"),
                "ms",
                Ok(together),
            )
            .against(format!("{n} one after another"), Ok(one_after_another)),
        );
        rows.push(Row::new(
            group,
            format!("{n} at once: efficiency = speed-up / {n}"),
            "",
            Ok(Sample::of(vec![efficiency])),
        ));
    }
    Ok(rows)
}

/// One VM, 1, 2 and 4 vCPUs, the same work: the `smp` guest counts the primes below 4000 in 40
/// blocks dealt round-robin to its CPUs. The time includes creating the VM and waking the APs.
fn smp_scaling(effort: &Effort) -> Result<Vec<Row>, BenchError> {
    let group = "SMP scaling (smp guest)";
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let time_with = |cpus: usize| {
        let mut config = RunConfig::new(vec![builtin("smp")]);
        config.vm.cpus = cpus;
        config.timeout = Some(Duration::from_secs(60));
        Sample::repeat(effort.runs, || {
            let started = Instant::now();
            run_many_in_process(&config, b"", 0)?;
            Ok(ms(started.elapsed()))
        })
    };
    let one = time_with(1)?;
    let mut rows = Vec::new();
    for cpus in [2usize, 4] {
        let several = time_with(cpus)?;
        let efficiency = one.median / several.median / cpus as f64;
        rows.push(
            Row::new(
                group,
                format!("{cpus} vCPUs ({cores} host cores)"),
                "ms",
                Ok(several),
            )
            .against("1 vCPU", Ok(one)),
        );
        rows.push(Row::new(
            group,
            format!("{cpus} vCPUs: efficiency = speed-up / {cpus}"),
            "",
            Ok(Sample::of(vec![efficiency])),
        ));
    }
    Ok(rows)
}

// ---- compute -----------------------------------------------------------------------------------

/// The matrix guests' computation, natively: 100 rounds of the 8x8 product; returns the sum.
fn native_matrix() -> u32 {
    let a = |i: usize, j: usize| ((i + j) % 10 + 1) as u32;
    let b = |i: usize, j: usize| ((i + 8 - j) % 10 + 1) as u32;
    let mut sum = 0;
    for _ in 0..100 {
        sum = 0;
        for i in 0..8 {
            for j in 0..8 {
                sum += (0..8).map(|k| a(i, k) * b(k, j)).sum::<u32>();
            }
        }
        sum = std::hint::black_box(sum);
    }
    sum
}

fn compute(
    exe: &Path,
    programs: &Programs,
    qemu: Option<&Qemu>,
    effort: &Effort,
) -> Result<Vec<Row>, BenchError> {
    let group = "compute (100 x 8x8 matrix product)";
    let native = Sample::repeat(effort.runs, || {
        let started = Instant::now();
        for _ in 0..effort.native_repeats {
            assert_eq!(native_matrix(), 16632);
        }
        Ok(started.elapsed().as_secs_f64() * 1e6 / f64::from(effort.native_repeats))
    })?;
    let kernel = programs.path("matrix_pvh.elf");
    let in_guest = Sample::repeat(effort.runs, || {
        let report = run_in_process(GuestImage::File(kernel.clone()), 2 << 20, b"", 1)?;
        Ok(report.stats.in_guest.as_secs_f64() * 1e6)
    })?;
    let kernel_arg = kernel
        .to_str()
        .expect("Programs::write checked the path is UTF-8");
    let ours = process_sample(
        effort.runs,
        || mini_kvm(exe, &["run", "--mem", "2M", kernel_arg]),
        exit_ms,
    )?;
    let theirs: Figure = match qemu {
        Some(qemu) => Ok(process_sample(
            effort.runs,
            || qemu.microvm("tcg", &kernel),
            exit_ms,
        )?),
        None => Err("not installed".into()),
    };
    Ok(vec![
        Row::new(
            group,
            "in a mini-kvm guest (time in KVM_RUN)",
            "us",
            Ok(in_guest),
        )
        .against("native, on the host", Ok(native)),
        Row::new(
            group,
            "mini-kvm, PVH matrix kernel (whole process)",
            "ms",
            Ok(ours),
        )
        .against("QEMU -M microvm -accel tcg, same kernel", theirs),
    ])
}

// ---- exit counts -------------------------------------------------------------------------------

fn exit_counts() -> Vec<Row> {
    builtin_guests()
        .iter()
        .map(|guest| {
            let input: &[u8] = if guest.name == "os" { b"0\n" } else { b"hi\n" };
            let mut config = RunConfig::new(vec![GuestImage::Builtin(guest)]);
            config.timeout = Some(Duration::from_secs(30));
            let figure = match run_many_in_process(&config, input, 0) {
                Ok(reports) => Ok(Sample::of(vec![reports[0].stats.total_exits() as f64])),
                // pm_paging on kvm_pvm: mini-kvm refuses 32-bit paging there.
                Err(BenchError::Vm(_)) if HostKvm::detect() == HostKvm::Pvm => {
                    Err("cannot run on kvm_pvm".to_string())
                }
                Err(_) => Err("did not run".to_string()),
            };
            Row::new("exits per built-in guest", guest.name, "exits", figure)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// A directory of the test's own, made world-writable and sticky like /tmp.
    fn shared_tmp() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mini-kvm-bench-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        dir
    }

    #[test]
    fn a_directory_another_user_made_in_advance_is_not_used() {
        // The attack: another local user (uid 65534, nobody) guesses the name of the bench's
        // directory and makes it first, with a link where a benchmark program goes, to a file
        // of the user who runs the bench.
        let tmp = shared_tmp();
        let victim = tmp.join("victim");
        std::fs::write(&victim, b"the runner's file").unwrap();
        let planted = tmp.join(format!("mini-kvm-bench-{}", std::process::id()));
        std::fs::create_dir(&planted).unwrap();
        std::os::unix::fs::symlink(&victim, planted.join("exits.bin")).unwrap();
        let is_root = unsafe { libc::getuid() } == 0;
        if is_root {
            std::os::unix::fs::lchown(&planted, Some(65534), Some(65534)).unwrap();
            std::os::unix::fs::lchown(planted.join("exits.bin"), Some(65534), Some(65534)).unwrap();
        }

        let programs = Programs::write_in(&tmp).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"the runner's file");
        assert_ne!(programs.dir, planted);
        // The bench's directory is new, the runner's, and private to them.
        let metadata = std::fs::symlink_metadata(&programs.dir).unwrap();
        assert!(metadata.is_dir());
        assert_eq!(metadata.uid(), unsafe { libc::getuid() });
        assert_eq!(metadata.mode() & 0o7777, 0o700);
        assert_eq!(
            std::fs::read(programs.path("exits.bin")).unwrap(),
            Programs::image("exits")
        );
        // And it goes at the end; the planted one is left as it was.
        let dir = programs.dir.clone();
        drop(programs);
        assert!(!dir.exists());
        assert!(planted.join("exits.bin").is_symlink());
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
