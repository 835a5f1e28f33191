//! What the kernel and the user programs agree on: system call numbers, the system call
//! instruction, the programs, and the `ps` and `list` records. Included by both (`#[path]`).

#![allow(dead_code)]

/// A system call is `ud2` followed by this marker, a `nopl 0x43535953(%rax)` ("SYSC"): see
/// docs/os.md. The kernel's #UD handler checks all nine bytes, so a stray `ud2` (a Rust abort,
/// a bug) is still an invalid opcode that kills the process, never a system call.
pub const SYSCALL_INSTRUCTION: [u8; 9] = [0x0f, 0x0b, 0x0f, 0x1f, 0x80, b'S', b'Y', b'S', b'C'];

/// System call numbers (in RAX; arguments in RDI, RSI, RDX, R10, R8, as in Linux; the result
/// in RAX).
pub mod sys {
    /// exit(status): ends the calling process.
    pub const EXIT: u64 = 0;
    /// write(buffer, length) -> bytes written: to the console.
    pub const WRITE: u64 = 1;
    /// read(buffer, capacity) -> bytes read, 0 at end of input: one line from the keyboard.
    pub const READ: u64 = 2;
    /// getpid() -> the caller's process id.
    pub const GETPID: u64 = 3;
    /// yield(): lets the next ready process run.
    pub const YIELD: u64 = 4;
    /// sleep(milliseconds): rounded up to whole timer ticks (10 ms).
    pub const SLEEP: u64 = 5;
    /// uptime() -> milliseconds since boot.
    pub const UPTIME: u64 = 6;
    /// spawn(program) -> process id of a new process running `program` (below).
    pub const SPAWN: u64 = 7;
    /// wait(pid) -> the exit status of the child `pid`, once it has ended.
    pub const WAIT: u64 = 8;
    /// ps(records, capacity) -> how many [`super::ProcessInfo`] records were filled in.
    pub const PS: u64 = 9;
    /// list(records, capacity) -> how many [`super::FileInfo`] records were filled in: the files
    /// on the disk, each name once; capacity + 1 if there were more than fit.
    pub const LIST: u64 = 10;
    /// read_file(name, name_length, buffer, capacity, offset) -> bytes read from `offset` of the
    /// file (0 at its end).
    pub const READ_FILE: u64 = 11;
    /// write_file(name, name_length, data, length) -> length: a new version of the file.
    pub const WRITE_FILE: u64 = 12;
    /// random(buffer, length) -> bytes of randomness from the entropy device (at most 256).
    pub const RANDOM: u64 = 13;
    /// disk_requests() -> how many virtio-blk requests (reads, writes, flushes) the kernel has
    /// completed since boot; 0 without a disk. For measuring (`sum`, `mini-kvm bench`).
    pub const DISK_REQUESTS: u64 = 14;
}

/// Error results (negative, as in Linux).
pub const ERROR_FAULT: i64 = -14;
pub const ERROR_INVALID: i64 = -22;
pub const ERROR_NO_SYSCALL: i64 = -38;
/// No free process slot or no memory for a new process.
pub const ERROR_AGAIN: i64 = -11;
/// wait(): no such child.
pub const ERROR_CHILD: i64 = -10;
/// read_file(): no file of that name.
pub const ERROR_NO_ENTRY: i64 = -2;
/// The disk did not do what was asked (or did not answer).
pub const ERROR_IO: i64 = -5;
/// No disk (list, read_file, write_file) or no entropy device (random).
pub const ERROR_NO_DEVICE: i64 = -19;
/// write_file(): the new file does not fit on the disk.
pub const ERROR_NO_SPACE: i64 = -28;
/// write_file(): the disk is read-only.
pub const ERROR_READ_ONLY: i64 = -30;
/// The disk holds something that is not a ustar archive.
pub const ERROR_BAD_ARCHIVE: i64 = -74;

/// The longest file name: the ustar header's name field.
pub const NAME_MAX: usize = 100;

/// One file, as `list` reports it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileInfo {
    /// Its size in bytes (of its last version).
    pub size: u64,
    /// The name's length; more than NAME_MAX for a longer name (made with ustar's prefix field
    /// by a host's tar), of which `name` holds the first NAME_MAX bytes.
    pub name_length: u64,
    pub name: [u8; NAME_MAX],
}

/// The programs in the user ELF file: `spawn` takes one of these numbers, and the new process
/// starts at the ELF entry point with it in RDI.
pub mod program {
    pub const SHELL: u64 = 0;
    pub const BGCOUNT: u64 = 1;
    pub const MULTIPLICATION: u64 = 2;
    pub const COUNTER: u64 = 3;
    pub const ECHO: u64 = 4;
    pub const FIBONACCI: u64 = 5;
    pub const PRIMES: u64 = 6;
    pub const CALCULATOR: u64 = 7;
    pub const FACTORIAL: u64 = 8;
    pub const GCD: u64 = 9;
    pub const ABOUT: u64 = 10;
    pub const PS: u64 = 11;
    pub const NULL: u64 = 12;
    pub const COUNT: u64 = 13;
}

/// Process names, indexed by program number (what `ps` shows).
pub const PROGRAM_NAMES: [&[u8]; program::COUNT as usize] = [
    b"shell",
    b"bgcount",
    b"multiply",
    b"counter",
    b"echo",
    b"fibonacci",
    b"primes",
    b"calc",
    b"factorial",
    b"gcd",
    b"about",
    b"ps",
    b"null",
];

/// One process, as `ps` reports it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ProcessInfo {
    pub pid: u32,
    /// One of the `STATE_*` values.
    pub state: u32,
    /// Timer ticks (10 ms) during which this process was running.
    pub ticks: u64,
    pub name: [u8; 16],
}

pub const STATE_RUNNING: u32 = 0;
pub const STATE_READY: u32 = 1;
pub const STATE_SLEEPING: u32 = 2;
pub const STATE_READING: u32 = 3;
pub const STATE_WAITING: u32 = 4;
pub const STATE_ZOMBIE: u32 = 5;
pub const STATE_NAMES: [&[u8]; 6] = [
    b"running",
    b"ready",
    b"sleeping",
    b"reading",
    b"waiting",
    b"zombie",
];

/// Where every process's memory is: the user ELF file is linked at USER_BASE (user.ld) and the
/// stack ends at USER_END. Everything below USER_BASE is the kernel's.
pub const USER_BASE: u64 = 0x4000_0000;
pub const USER_END: u64 = 0x8000_0000;
pub const USER_STACK_PAGES: u64 = 4;

/// The timer: ticks per second.
pub const TICK_HZ: u64 = 100;
pub const TICK_MS: u64 = 1000 / TICK_HZ;
