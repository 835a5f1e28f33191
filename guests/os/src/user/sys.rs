//! System calls, as the user programs see them: one function each.
//!
//! The instruction is `ud2` and a marker (abi.rs, and docs/os.md for why not `syscall`): the
//! number goes in RAX, the arguments in RDI, RSI, RDX, R10 and R8, and the result comes back in
//! RAX. The kernel keeps every other register.

use core::arch::asm;

use crate::abi::{FileInfo, ProcessInfo, sys};

fn system_call(number: u64, arg0: u64, arg1: u64) -> i64 {
    system_call5(number, [arg0, arg1, 0, 0, 0])
}

fn system_call5(number: u64, args: [u64; 5]) -> i64 {
    let result: u64;
    unsafe {
        asm!(
            "ud2",
            "nop dword ptr [rax + 0x43535953]", // the marker: 0F 1F 80 "SYSC"
            inout("rax") number => result,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            in("r8") args[4],
            options(nostack),
        );
    }
    result as i64
}

pub fn exit(status: i64) -> ! {
    system_call(sys::EXIT, status as u64, 0);
    // Never reached: the kernel does not return from exit.
    loop {
        yield_now();
    }
}

pub fn write(bytes: &[u8]) -> i64 {
    system_call(sys::WRITE, bytes.as_ptr() as u64, bytes.len() as u64)
}

/// Bytes of one line (with its '\n', unless it was the last line of the input); 0 at end of
/// input.
pub fn read(buffer: &mut [u8]) -> i64 {
    system_call(sys::READ, buffer.as_mut_ptr() as u64, buffer.len() as u64)
}

pub fn getpid() -> i64 {
    system_call(sys::GETPID, 0, 0)
}

pub fn yield_now() {
    system_call(sys::YIELD, 0, 0);
}

pub fn sleep(milliseconds: u64) {
    system_call(sys::SLEEP, milliseconds, 0);
}

pub fn uptime_ms() -> u64 {
    system_call(sys::UPTIME, 0, 0) as u64
}

pub fn spawn(program: u64) -> i64 {
    system_call(sys::SPAWN, program, 0)
}

pub fn wait(pid: i64) -> i64 {
    system_call(sys::WAIT, pid as u64, 0)
}

pub fn ps(records: &mut [ProcessInfo]) -> usize {
    let count = system_call(sys::PS, records.as_mut_ptr() as u64, records.len() as u64);
    count.max(0) as usize
}

/// The files on the disk: how many records were filled, `records.len() + 1` if there were more;
/// negative without a disk or on an error.
pub fn list(records: &mut [FileInfo]) -> i64 {
    system_call(sys::LIST, records.as_mut_ptr() as u64, records.len() as u64)
}

/// Bytes of the file `name` from `offset` on (0 at its end), or a negative error.
pub fn read_file(name: &[u8], buffer: &mut [u8], offset: u64) -> i64 {
    let args = [
        name.as_ptr() as u64,
        name.len() as u64,
        buffer.as_mut_ptr() as u64,
        buffer.len() as u64,
        offset,
    ];
    system_call5(sys::READ_FILE, args)
}

/// Writes the file `name` (a new version of it); the length, or a negative error.
pub fn write_file(name: &[u8], data: &[u8]) -> i64 {
    let args = [
        name.as_ptr() as u64,
        name.len() as u64,
        data.as_ptr() as u64,
        data.len() as u64,
        0,
    ];
    system_call5(sys::WRITE_FILE, args)
}

/// Fills `buffer` (at most 256 bytes) with random bytes: the length, or a negative error.
pub fn random(buffer: &mut [u8]) -> i64 {
    system_call(sys::RANDOM, buffer.as_mut_ptr() as u64, buffer.len() as u64)
}

/// How many virtio-blk requests the kernel has completed since boot (0 without a disk).
pub fn disk_requests() -> u64 {
    system_call(sys::DISK_REQUESTS, 0, 0) as u64
}
