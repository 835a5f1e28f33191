//! seccomp: once a guest runs, each mini-kvm thread may make only the system calls its job
//! needs. A guest that found a bug in a device model and took over a thread still could not
//! open a file, start a process or make a network connection: `open`, `execve`, `socket` and
//! everything else not listed here are refused by the kernel.
//!
//! Each thread installs its own filter (the `seccompiler` crate compiles it to BPF, as in
//! Firecracker) once its set-up is done, and keeps it for the rest of its life:
//!
//! - `vcpu<N>-NAME`, and the thread that runs vCPU 0: [`Role::Vcpu`], `ioctl` `KVM_RUN` and the
//!   register reads of a report;
//! - `events-NAME`: [`Role::EventLoop`], `epoll_wait`/`epoll_ctl` and `read` (stdin, eventfds);
//! - the thread that waits for several guests: [`Role::Waiter`], nothing but its report;
//! - the `--tui` and `--display` view: [`Role::Terminal`], what crossterm needs (its epoll and
//!   its SIGWINCH socket pair; its read-only `openat` of `/dev/tty` each frame fails with
//!   EACCES, through a second filter, and it asks stdout instead), `KVM_GET_DIRTY_LOG` for the
//!   screen, and an `openat` that only creates, in Ctrl-S's directory;
//!
//! Directories in which a thread may make files are granted before the filters are built
//! ([`allow_creating_screenshots_in`], [`allow_replacing_files_in`]): the rules compare the
//! calls' directory arguments with their descriptors.
//!
//! All of them may use memory, futexes, signals, clocks, `write`, `close` and `poll`.
//!
//! Every role may use the terminal ioctls (raw mode on and off). A call outside the filter
//! raises SIGSYS; the handler below names the thread and the call on stderr and ends the
//! process with status 159 (128 + SIGSYS, as a shell shows a process that SIGSYS killed).
//! That is always a bug in mini-kvm: `--no-seccomp` runs without the filters, to debug it.
//!
//! The library leaves the filters off unless its caller asks (`VmConfig::seccomp`): vCPU 0
//! runs on the caller's thread, and a filter cannot be taken off a thread again.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::{Mutex, OnceLock};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr, ioctl_iow_nr, ioctl_iowr_nr};

/// What a thread does, and so which system calls it may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Runs a vCPU (`KVM_RUN`), its devices and hypercalls; for vCPU 0 also the end of the
    /// run: tearing the VM down and printing the report.
    Vcpu,
    /// A VM's event loop: input, timers, device events; stops the vCPUs.
    EventLoop,
    /// With several guests, the thread that started them and waits for them to end.
    Waiter,
    /// The `--tui` view: draws the panes and reads keys (src/tui/).
    Terminal,
    /// A guest's GDB stub, once gdb is connected (src/gdb/): reads and writes its socket.
    Debugger,
}

impl Role {
    /// The name the SIGSYS report gives the thread.
    fn name(self) -> &'static str {
        match self {
            Role::Vcpu => "a vCPU thread",
            Role::EventLoop => "an event-loop thread",
            Role::Waiter => "the thread waiting for the guests",
            Role::Terminal => "the terminal-view thread",
            Role::Debugger => "the GDB stub thread",
        }
    }
}

/// The exit status after a forbidden system call: 128 + SIGSYS.
pub const SECCOMP_EXIT_STATUS: i32 = 128 + libc::SIGSYS;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot build the seccomp filters: {0}")]
    Build(String),
    #[error(
        "cannot install the seccomp filter of {role}: {source} (does this kernel have \
         CONFIG_SECCOMP_FILTER? --no-seccomp runs without the filters)"
    )]
    Install {
        role: &'static str,
        source: seccompiler::Error,
    },
}

// The KVM ioctls a vCPU thread makes once it runs (linux/kvm.h; KVMIO is 0xAE).
const KVMIO: u32 = 0xAE;
ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_bindings::kvm_regs);
ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_bindings::kvm_sregs);
ioctl_iowr_nr!(KVM_TRANSLATE, KVMIO, 0x85, kvm_bindings::kvm_translation);
// At the guest's first write to an output-only port (coalesced.rs says why then).
ioctl_iow_nr!(
    KVM_REGISTER_COALESCED_MMIO,
    KVMIO,
    0x67,
    kvm_bindings::kvm_coalesced_mmio_zone
);
ioctl_ior_nr!(KVM_GET_MP_STATE, KVMIO, 0x98, kvm_bindings::kvm_mp_state);
// What a debugger does to a stopped vCPU, on the vCPU's thread (vmm/debug.rs).
ioctl_iow_nr!(KVM_SET_REGS, KVMIO, 0x82, kvm_bindings::kvm_regs);
// The display view's one KVM call: which pages of the screen's memory the guest wrote.
ioctl_iow_nr!(KVM_GET_DIRTY_LOG, KVMIO, 0x42, kvm_bindings::kvm_dirty_log);
ioctl_ior_nr!(KVM_GET_FPU, KVMIO, 0x8c, kvm_bindings::kvm_fpu);
ioctl_iow_nr!(
    KVM_SET_GUEST_DEBUG,
    KVMIO,
    0x9b,
    kvm_bindings::kvm_guest_debug
);

/// Terminal ioctls: `isatty`, raw mode on and off (src/terminal.rs, and crossterm's through
/// rustix, which uses the termios2 calls), the window size.
const TERMINAL_IOCTLS: [u64; 7] = [
    libc::TCGETS,
    libc::TCSETS,
    libc::TCSETSW,
    libc::TCGETS2,
    libc::TCSETS2,
    libc::TCSETSW2,
    libc::TIOCGWINSZ,
];

/// What every filtered thread needs: memory, futexes (locks, joins), signals (the vCPU kick,
/// the terminal's restore-on-signal handler), clocks, writes (output, eventfds, stderr),
/// closing what it owns, and ending.
const COMMON: &[i64] = &[
    libc::SYS_write,
    libc::SYS_close,
    libc::SYS_futex,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    libc::SYS_tgkill,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_getrandom,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// What a role needs besides [`COMMON`] and `ioctl`, allowed whatever the arguments.
fn extra_calls(role: Role) -> &'static [i64] {
    match role {
        Role::Vcpu | Role::Waiter => &[],
        // Its socket: std reads a socket with recv and writes it with send (MSG_NOSIGNAL: a
        // closed connection is an error, not a SIGPIPE), which are recvfrom and sendto.
        // And accept4 and shutdown, to tell a second gdb that it is not welcome.
        Role::Debugger => &[
            libc::SYS_read,
            libc::SYS_recvfrom,
            libc::SYS_sendto,
            libc::SYS_accept4,
            libc::SYS_shutdown,
        ],
        Role::EventLoop => &[
            libc::SYS_read,
            // virtio-blk's requests (devices/virtio/block.rs) run on the event loop.
            libc::SYS_pread64,
            libc::SYS_pwrite64,
            libc::SYS_fdatasync,
            // virtio-blk checks that its image is still there, whole, before a write or a
            // flush: fstat, which takes only a descriptor.
            libc::SYS_fstat,
            libc::SYS_epoll_wait,
            libc::SYS_epoll_pwait,
            libc::SYS_epoll_ctl,
        ],
        // crossterm's event source: its epoll, and the socket pair its SIGWINCH handler wakes
        // it through (receiving; sending is below).
        Role::Terminal => &[
            libc::SYS_read,
            libc::SYS_epoll_wait,
            libc::SYS_epoll_pwait,
            libc::SYS_epoll_ctl,
            libc::SYS_recvfrom,
        ],
    }
}

/// A call a role may make only with some values of one argument.
struct ArgumentRule {
    call: i64,
    /// Which argument (0-based) is compared, and how wide it is.
    argument: u8,
    width: SeccompCmpArgLen,
    allowed: Vec<u64>,
}

/// Calls a role may make only with some arguments.
fn calls_with_arguments(role: Role) -> Vec<ArgumentRule> {
    // fcntl only to read a descriptor's flags: Rust's standard library checks, in debug
    // builds, that a descriptor it closes is open (F_GETFD).
    let mut calls = vec![ArgumentRule {
        call: libc::SYS_fcntl,
        argument: 1,
        width: SeccompCmpArgLen::Dword,
        allowed: vec![libc::F_GETFD as u64, libc::F_GETFL as u64],
    }];
    if role == Role::Terminal {
        // crossterm opens /dev/tty read-only for every window-size query (each frame): an
        // open with exactly these flags, allowed here only to be refused with EACCES by the
        // view's second filter ([`build_refusals`]), so that crossterm asks stdout instead
        // (a forbidden call would end the process). No other flags: Ctrl-S's own creating
        // `openat` is allowed only in its directory ([`calls_in_granted_directories`]).
        calls.push(ArgumentRule {
            call: libc::SYS_openat,
            argument: 2,
            width: SeccompCmpArgLen::Dword,
            allowed: vec![READ_ONLY_OPEN_FLAGS as u64],
        });
        // The SIGWINCH handler's wake-up: a send on its connected socket (no address; and no
        // thread may create or connect a socket).
        calls.push(ArgumentRule {
            call: libc::SYS_sendto,
            argument: 4,
            width: SeccompCmpArgLen::Qword,
            allowed: vec![0],
        });
    }
    calls
}

/// The flags of crossterm's read-only open of /dev/tty (and of Rust's `File::open`).
const READ_ONLY_OPEN_FLAGS: i32 = libc::O_RDONLY | libc::O_CLOEXEC;

/// The flags Ctrl-S creates a screenshot with (src/tui/screen.rs), the one `openat` that
/// writes which the view may make: a new file only (`O_EXCL`), never through a link
/// (`O_NOFOLLOW`; `O_EXCL` refuses one already).
pub const SCREENSHOT_OPEN_FLAGS: i32 =
    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;

/// Calls a role may make only in a directory it was granted ([`Grants`]): for each, the
/// `(argument, value)` pairs that must all hold (one rule each; any matching rule allows).
fn calls_in_granted_directories(role: Role, grants: &Grants) -> Vec<(i64, Vec<(u8, u64)>)> {
    let mut calls = Vec::new();
    if role == Role::Terminal
        && let Some(directory) = grants.screenshots
    {
        calls.push((
            libc::SYS_openat,
            vec![(0, directory as u64), (2, SCREENSHOT_OPEN_FLAGS as u64)],
        ));
    }
    // The thread that ends a one-guest run: vCPU 0's, or with the view, the view's.
    if matches!(role, Role::Vcpu | Role::Terminal) {
        for &directory in &grants.replacements {
            let directory = directory as u64;
            // renameat2(directory, new, directory, target, 0): within the directory, no
            // flags (no RENAME_EXCHANGE, no RENAME_WHITEOUT).
            calls.push((
                libc::SYS_renameat2,
                vec![(0, directory), (2, directory), (4, 0)],
            ));
            // unlinkat(directory, new, 0): a file, not a directory.
            calls.push((libc::SYS_unlinkat, vec![(0, directory), (2, 0)]));
        }
    }
    calls
}

/// The ioctl requests a role may make.
fn ioctls(role: Role) -> Vec<u64> {
    let mut requests = TERMINAL_IOCTLS.to_vec();
    if role == Role::Vcpu {
        requests.extend(
            [
                KVM_RUN(),
                KVM_GET_REGS(),
                KVM_GET_SREGS(),
                KVM_TRANSLATE(),
                KVM_GET_MP_STATE(),
                KVM_REGISTER_COALESCED_MMIO(),
                KVM_SET_REGS(),
                KVM_GET_FPU(),
                KVM_SET_GUEST_DEBUG(),
            ]
            .map(u64::from),
        );
    }
    if role == Role::Terminal {
        requests.push(KVM_GET_DIRTY_LOG());
    }
    requests
}

/// The filter of one role, compiled to BPF.
fn build(role: Role, grants: &Grants) -> Result<BpfProgram, SeccompError> {
    let build_error = |error: &dyn std::fmt::Display| SeccompError::Build(error.to_string());
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = COMMON
        .iter()
        .chain(extra_calls(role))
        .map(|&call| (call, Vec::new()))
        .collect();
    // ioctl only with the listed requests (argument 1), and the other calls of
    // `calls_with_arguments` only with their values: one rule per value, any matching allows.
    let mut with_arguments = calls_with_arguments(role);
    with_arguments.push(ArgumentRule {
        call: libc::SYS_ioctl,
        argument: 1,
        width: SeccompCmpArgLen::Dword,
        allowed: ioctls(role),
    });
    for rule in with_arguments {
        let call_rules = rule
            .allowed
            .into_iter()
            .map(|value| {
                let condition = SeccompCondition::new(
                    rule.argument,
                    rule.width.clone(),
                    SeccompCmpOp::Eq,
                    value,
                )?;
                SeccompRule::new(vec![condition])
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| build_error(&e))?;
        rules.entry(rule.call).or_default().extend(call_rules);
    }
    for (call, arguments) in calls_in_granted_directories(role, grants) {
        let conditions = arguments
            .into_iter()
            .map(|(argument, value)| {
                SeccompCondition::new(argument, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| build_error(&e))?;
        let rule = SeccompRule::new(conditions).map_err(|e| build_error(&e))?;
        rules.entry(call).or_default().push(rule);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| build_error(&e))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| build_error(&e))
}

/// The view's second filter, installed before its main one: what the main filter lets through
/// only so that it fails with an error instead of ending the process. An `openat` with
/// crossterm's read-only flags gets EACCES (crossterm then takes the window size from stdout,
/// which the view requires to be the terminal); everything else passes on to the main filter.
/// (The kernel runs both filters and takes the stricter answer: a trap beats an error.)
fn build_refusals() -> Result<BpfProgram, SeccompError> {
    let build_error = |error: &dyn std::fmt::Display| SeccompError::Build(error.to_string());
    let read_only = SeccompCondition::new(
        2,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        READ_ONLY_OPEN_FLAGS as u64,
    )
    .and_then(|condition| SeccompRule::new(vec![condition]))
    .map_err(|e| build_error(&e))?;
    let filter = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_openat, vec![read_only])]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EACCES as u32),
        TargetArch::x86_64,
    )
    .map_err(|e| build_error(&e))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| build_error(&e))
}

/// Directories in which filtered threads may make files: given (as open descriptors, kept open
/// for the rest of the run) before the filters are built, and compared with the directory
/// argument of the calls. The names themselves are out of reach: seccomp sees only the
/// pointer.
#[derive(Default)]
struct Grants {
    /// Ctrl-S's directory: the view ([`Role::Terminal`]) may create new files in it.
    screenshots: Option<RawFd>,
    /// `--screen-dump`'s and `--screenshot`'s directories: the thread that ends the run (vCPU
    /// 0's, [`Role::Vcpu`], or the view's) renames a new file over the target in them, or
    /// removes it when the run failed (src/output_file.rs).
    replacements: Vec<RawFd>,
}

static GRANTS: Mutex<Grants> = Mutex::new(Grants {
    screenshots: None,
    replacements: Vec::new(),
});

/// The filters, once built (the first [`prepare`] or [`install`] builds them).
static FILTERS: OnceLock<Result<Filters, String>> = OnceLock::new();

/// Grants a change of the filters before they are built; after, a grant would come too late
/// (a bug in mini-kvm's order of set-up).
fn grant(change: impl FnOnce(&mut Grants)) -> Result<(), SeccompError> {
    if FILTERS.get().is_some() {
        return Err(SeccompError::Build(
            "a directory was granted after the filters were built".into(),
        ));
    }
    change(&mut GRANTS.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(())
}

/// Lets the view's thread create new files in `directory` (Ctrl-S): `openat(directory, NAME,
/// O_WRONLY|O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC)` and no other `openat` that writes. The
/// descriptor must stay open while the filters are in force.
pub fn allow_creating_screenshots_in(directory: BorrowedFd) -> Result<(), SeccompError> {
    grant(|grants| grants.screenshots = Some(directory.as_raw_fd()))
}

/// Lets the thread that ends the run (vCPU 0's, or the view's) rename a file within
/// `directory`, or remove one in it (`renameat2` and `unlinkat` with `directory` as every
/// directory argument and no flags): how an `OutputFile` (src/output_file.rs)
/// written at the end of a run replaces its target. The descriptor must stay open while the
/// filters are in force.
pub fn allow_replacing_files_in(directory: BorrowedFd) -> Result<(), SeccompError> {
    grant(|grants| grants.replacements.push(directory.as_raw_fd()))
}

/// The filters, built once per process.
struct Filters {
    vcpu: BpfProgram,
    event_loop: BpfProgram,
    waiter: BpfProgram,
    terminal: BpfProgram,
    /// Installed on the view's thread before `terminal` ([`build_refusals`]).
    terminal_refusals: BpfProgram,
    debugger: BpfProgram,
}

fn filters() -> Result<&'static Filters, SeccompError> {
    let built = FILTERS.get_or_init(|| {
        let grants = GRANTS.lock().unwrap_or_else(|p| p.into_inner());
        let build = |role| build(role, &grants).map_err(|e| e.to_string());
        Ok(Filters {
            vcpu: build(Role::Vcpu)?,
            event_loop: build(Role::EventLoop)?,
            waiter: build(Role::Waiter)?,
            terminal: build(Role::Terminal)?,
            terminal_refusals: build_refusals().map_err(|e| e.to_string())?,
            debugger: build(Role::Debugger)?,
        })
    });
    built.as_ref().map_err(|e| SeccompError::Build(e.clone()))
}

/// Makes glibc's allocator safe to call under the filters. Call it first in `main`, before any
/// thread starts (it changes how arenas are made, not the ones already made).
///
/// glibc's malloc gives threads arenas of their own (up to eight per core), each a heap made with
/// `mmap`. The first time such a heap shrinks, glibc reads `/proc/sys/vm/overcommit_memory`: an
/// `openat` that no filter allows, made from whatever thread happened to free memory. (Sixteen
/// guests printing 64 KiB lines with no newline did it within two seconds, and the run ended with
/// status 159.) With one arena every thread allocates from the main heap, which grows and shrinks
/// with `brk` only; and glibc no longer counts the CPUs (another file it would open) to decide how
/// many arenas to make. The cost is one lock for all allocations: mini-kvm's threads allocate
/// little once a guest runs.
pub fn prepare_allocator() {
    // SAFETY: mallopt only sets a parameter of the allocator; M_ARENA_MAX takes any positive
    // count.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Builds the filters and installs the SIGSYS handler, before any thread needs them: a VM
/// whose filters cannot be built is not started.
pub fn prepare() -> Result<(), SeccompError> {
    filters()?;
    install_sigsys_handler();
    // Anything a filtered thread would look up lazily is looked up now (the host's KVM module
    // is read from /sys, which a filtered thread could not open).
    let _ = super::kvm::HostKvm::detect();
    Ok(())
}

/// Puts the calling thread under `role`'s filter, for the rest of its life.
pub fn install(role: Role) -> Result<(), SeccompError> {
    let all = filters()?;
    install_sigsys_handler();
    let install_error = |source| SeccompError::Install {
        role: role.name(),
        source,
    };
    if role == Role::Terminal {
        // First: once the main filter is in, installing another is a forbidden call.
        seccompiler::apply_filter(&all.terminal_refusals).map_err(install_error)?;
    }
    let program = match role {
        Role::Vcpu => &all.vcpu,
        Role::EventLoop => &all.event_loop,
        Role::Waiter => &all.waiter,
        Role::Terminal => &all.terminal,
        Role::Debugger => &all.debugger,
    };
    seccompiler::apply_filter(program).map_err(install_error)?;
    THREAD_ROLE.with(|name| name.set(role.name()));
    Ok(())
}

/// [`install`] for a thread that has no way to report an error but to end the process: says
/// why on stderr and exits with status 1. (Installing fails only on a kernel without seccomp
/// filters, and then it fails on the first thread, before a guest ran.)
pub fn install_or_exit(role: Role) {
    if let Err(error) = install(role) {
        let _ = std::io::Write::write_all(
            &mut crate::console::stderr::stderr(),
            format!("mini-kvm: error: {error}\n").as_bytes(),
        );
        std::process::exit(1);
    }
}

thread_local! {
    /// The role of this thread's filter, for the SIGSYS report.
    static THREAD_ROLE: Cell<&'static str> = const { Cell::new("an unfiltered thread") };
}

fn install_sigsys_handler() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        // SAFETY: a zeroed sigaction with a valid handler and SA_SIGINFO is a valid argument.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigsys as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut());
        }
    });
}

/// The SIGSYS handler: a forbidden system call. Only async-signal-safe work: format into a
/// stack buffer, `write` it to stderr, `_exit`.
extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // For SIGSYS, siginfo holds the call number after the signal number, errno, code (3 ints,
    // padded to 16 bytes) and the calling address (8 bytes): at byte 24 (asm-generic/siginfo.h).
    // SAFETY: the kernel passes a valid siginfo_t for SA_SIGINFO handlers.
    let call = unsafe { *(info as *const u8).add(24).cast::<i32>() } as i64;
    let role = THREAD_ROLE.with(Cell::get);
    let mut message = MessageBuffer::default();
    message.push(b"mini-kvm: seccomp: ");
    message.push(role.as_bytes());
    message.push(b" made the system call ");
    message.push(syscall_name(call).as_bytes());
    message.push(b" (");
    message.push_number(call);
    if call == libc::SYS_ioctl {
        // The request is the second argument, in RSI when the call trapped.
        // SAFETY: for SA_SIGINFO handlers the third argument is the thread's ucontext_t.
        let request = unsafe {
            (*context.cast::<libc::ucontext_t>()).uc_mcontext.gregs[libc::REG_RSI as usize]
        };
        message.push(b", request ");
        message.push_hex(request as u64);
    }
    message.push(
        b"), which its filter does not allow: this is a bug in mini-kvm (--no-seccomp runs \
          without the filters)\n",
    );
    // SAFETY: write and _exit are async-signal-safe; the buffer is valid for its length.
    unsafe {
        libc::write(
            libc::STDERR_FILENO,
            message.bytes.as_ptr().cast(),
            message.len,
        );
        libc::_exit(SECCOMP_EXIT_STATUS);
    }
}

/// A fixed buffer for the SIGSYS message (no allocation in a signal handler).
struct MessageBuffer {
    bytes: [u8; 256],
    len: usize,
}

impl Default for MessageBuffer {
    fn default() -> Self {
        MessageBuffer {
            bytes: [0; 256],
            len: 0,
        }
    }
}

impl MessageBuffer {
    fn push(&mut self, text: &[u8]) {
        let room = self.bytes.len() - self.len;
        let take = text.len().min(room);
        self.bytes[self.len..self.len + take].copy_from_slice(&text[..take]);
        self.len += take;
    }

    fn push_hex(&mut self, number: u64) {
        let mut digits = [0u8; 16];
        let mut at = digits.len();
        let mut rest = number;
        loop {
            at -= 1;
            digits[at] = b"0123456789abcdef"[(rest & 0xf) as usize];
            rest >>= 4;
            if rest == 0 {
                break;
            }
        }
        self.push(b"0x");
        self.push(&digits[at..]);
    }

    fn push_number(&mut self, number: i64) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut rest = number.unsigned_abs();
        loop {
            at -= 1;
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        if number < 0 {
            self.push(b"-");
        }
        self.push(&digits[at..]);
    }
}

/// The name of a system call a filter refuses, for the report: the ones an attacker would
/// want first, and the ones a change to mini-kvm might add by accident.
fn syscall_name(call: i64) -> &'static str {
    const NAMES: &[(i64, &str)] = &[
        (libc::SYS_read, "read"),
        (libc::SYS_open, "open"),
        (libc::SYS_openat, "openat"),
        (libc::SYS_openat2, "openat2"),
        (libc::SYS_creat, "creat"),
        (libc::SYS_stat, "stat"),
        (libc::SYS_statx, "statx"),
        (libc::SYS_newfstatat, "newfstatat"),
        (libc::SYS_fstat, "fstat"),
        (libc::SYS_fcntl, "fcntl"),
        (libc::SYS_ioctl, "ioctl"),
        (libc::SYS_unlink, "unlink"),
        (libc::SYS_unlinkat, "unlinkat"),
        (libc::SYS_rename, "rename"),
        (libc::SYS_renameat, "renameat"),
        (libc::SYS_renameat2, "renameat2"),
        (libc::SYS_linkat, "linkat"),
        (libc::SYS_execve, "execve"),
        (libc::SYS_execveat, "execveat"),
        (libc::SYS_fork, "fork"),
        (libc::SYS_vfork, "vfork"),
        (libc::SYS_clone, "clone"),
        (libc::SYS_clone3, "clone3"),
        (libc::SYS_kill, "kill"),
        (libc::SYS_ptrace, "ptrace"),
        (libc::SYS_socket, "socket"),
        (libc::SYS_connect, "connect"),
        (libc::SYS_bind, "bind"),
        (libc::SYS_sendto, "sendto"),
        (libc::SYS_recvfrom, "recvfrom"),
        (libc::SYS_accept4, "accept4"),
        (libc::SYS_shutdown, "shutdown"),
        (libc::SYS_mount, "mount"),
        (libc::SYS_prctl, "prctl"),
        (libc::SYS_seccomp, "seccomp"),
        (libc::SYS_epoll_wait, "epoll_wait"),
        (libc::SYS_epoll_ctl, "epoll_ctl"),
        (libc::SYS_epoll_create1, "epoll_create1"),
        (libc::SYS_eventfd2, "eventfd2"),
        (libc::SYS_pipe2, "pipe2"),
        (libc::SYS_dup, "dup"),
        (libc::SYS_dup3, "dup3"),
        (libc::SYS_lseek, "lseek"),
        (libc::SYS_pread64, "pread64"),
        (libc::SYS_readv, "readv"),
        (libc::SYS_writev, "writev"),
    ];
    NAMES
        .iter()
        .find(|(number, _)| *number == call)
        .map_or("(not in mini-kvm's list of names)", |(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_builds() {
        let grants = Grants {
            screenshots: Some(3),
            replacements: vec![4, 5],
        };
        for role in [Role::Vcpu, Role::EventLoop, Role::Waiter, Role::Terminal] {
            assert!(
                !build(role, &Grants::default()).unwrap().is_empty(),
                "{role:?}"
            );
            assert!(!build(role, &grants).unwrap().is_empty(), "{role:?}");
        }
        assert!(!build_refusals().unwrap().is_empty());
    }

    #[test]
    fn the_kvm_ioctl_numbers_are_linuxs() {
        // From linux/kvm.h on x86-64, as strace prints them.
        assert_eq!(KVM_RUN(), 0xae80);
        assert_eq!(KVM_GET_REGS(), 0x8090_ae81);
        assert_eq!(KVM_GET_SREGS(), 0x8138_ae83);
        assert_eq!(KVM_GET_MP_STATE(), 0x8004_ae98);
        assert_eq!(KVM_GET_DIRTY_LOG(), 0x4010_ae42);
        assert_eq!(KVM_TRANSLATE(), 0xc018_ae85);
        assert_eq!(KVM_REGISTER_COALESCED_MMIO(), 0x4010_ae67);
    }

    #[test]
    fn numbers_print_as_decimal() {
        let mut message = MessageBuffer::default();
        message.push_number(257);
        message.push(b" ");
        message.push_number(0);
        message.push(b" ");
        message.push_hex(0x4010_ae67);
        assert_eq!(&message.bytes[..message.len], b"257 0 0x4010ae67");
    }
}
