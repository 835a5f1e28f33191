//! Measuring: repeated samples summarised as median/min/max, and child processes timed from
//! spawn to their first output byte and to their end, with their peak memory.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::BenchError;

/// Repeated measurements of one quantity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Sample {
    /// Summarises `values` (at least one).
    pub fn of(mut values: Vec<f64>) -> Sample {
        assert!(!values.is_empty(), "a sample needs at least one value");
        values.sort_by(f64::total_cmp);
        let middle = values.len() / 2;
        let median = if values.len() % 2 == 1 {
            values[middle]
        } else {
            (values[middle - 1] + values[middle]) / 2.0
        };
        Sample {
            median,
            min: values[0],
            max: values[values.len() - 1],
            runs: values.len(),
        }
    }

    /// Runs `measure` `runs` times and summarises the results.
    pub fn repeat(
        runs: usize,
        mut measure: impl FnMut() -> Result<f64, BenchError>,
    ) -> Result<Sample, BenchError> {
        let values = (0..runs.max(1))
            .map(|_| measure())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Sample::of(values))
    }
}

/// One run of a child process.
#[derive(Debug, Clone, Copy)]
pub struct ProcessRun {
    /// From just before spawn to the first byte on its stdout (`None`: it printed nothing).
    pub first_byte: Option<Duration>,
    /// From just before spawn to its end.
    pub total: Duration,
    /// Peak resident memory (the kernel's `ru_maxrss`, the same as VmHWM), in KiB.
    pub max_rss_kib: u64,
    /// Its exit status (`None`: killed by a signal).
    pub status: Option<i32>,
}

/// Starts `command` with its stdout piped and `input` fed to its stdin by a thread of its own
/// (so that a child that does not read it cannot block us); the caller has set its stderr.
/// Join the thread once the child is done.
pub fn spawn_fed(
    command: &mut Command,
    input: &[u8],
) -> Result<(Child, JoinHandle<()>), BenchError> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|source| BenchError::Spawn {
            command: format!("{command:?}"),
            source,
        })?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&input);
    });
    Ok((child, feeder))
}

/// Runs `command` with stdin from /dev/null (or `stdin_bytes`), timing it.
pub fn time_process(command: &mut Command, stdin_bytes: &[u8]) -> Result<ProcessRun, BenchError> {
    let describe = format!("{command:?}");
    let started = Instant::now();
    let (mut child, feeder) = spawn_fed(command.stderr(Stdio::null()), stdin_bytes)?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut first = [0u8; 1];
    let first_byte = match stdout.read(&mut first) {
        Ok(1) => Some(started.elapsed()),
        _ => None,
    };
    let mut rest = Vec::new();
    let _ = stdout.read_to_end(&mut rest);
    let _ = feeder.join();

    // wait4 rather than Child::wait: it also reports the child's peak memory.
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, with valid pointers to locals.
    let reaped = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    let total = started.elapsed();
    if reaped < 0 {
        return Err(BenchError::Wait {
            command: describe,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(ProcessRun {
        first_byte,
        total,
        max_rss_kib: usage.ru_maxrss as u64,
        status: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
    })
}

/// Milliseconds, for tables.
pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
