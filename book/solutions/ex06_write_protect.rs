//! Solution to exercise ex06 of the book "Write a hypervisor with mini-kvm"
//! (book/src/exercises.md): Step 5 with the guest's 2 MiB page read-only, and CR0.WP set.
//! `cargo run --example ex06_write_protect`; `diff examples/step05_long_mode.rs
//! book/solutions/ex06_write_protect.rs` shows the whole answer.
//!
//! Without CR0.WP, ring 0 may write to read-only pages: the guest's `rep movsb` would still
//! succeed. With it, the first write is a page fault, vector 14. The guest has no IDT (its IDT
//! register points at zeros), so the page fault cannot be delivered; neither can the double
//! fault that follows, and the CPU shuts down: KVM_EXIT_SHUTDOWN. The VMM reports where: RIP
//! is still at the `rep movsb`, and CR2 holds the address of the page fault. (Not with AMD's
//! kvm_amd, which resets the vCPU at a shutdown: there they are the reset values, RIP 0xfff0.)

use std::io::Write;
use std::process::ExitCode;

use kvm_bindings::{kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// The guest-physical map: two pieces of RAM, each a KVM memory slot, and a hole between them
/// where nothing is mapped. Slot 0 holds the GDT, the page tables, the program (at 0x10000)
/// and its stack.
const SLOT_0: (u64, usize) = (0x0, 0x20000); //        128 KiB
const HOLE: (u64, usize) = (0x20000, 0xe0000); //      896 KiB of nothing
const SLOT_1: (u64, usize) = (0x100000, 0x1000); //    4 KiB at 1 MiB
/// The guest is loaded at guest-physical 0x10000, and starts there: RIP = 0x10000, a virtual
/// address that the page tables map to the same physical one.
const LOAD_ADDRESS: u64 = 0x10000;

/// The GDT, the guest's table of segment descriptors, at guest-physical 0x1000. KVM does not
/// read it: KVM_SET_SREGS gives it each segment's base, limit and type directly. The guest reads
/// it whenever it loads a segment register, as this one does.
const GDT_ADDRESS: u64 = 0x1000;
const GDT: [u64; 3] = [
    0,                     // 0x00: the null descriptor, which the CPU requires
    0x00af_9a00_0000_ffff, // 0x08: code, 64-bit (L = 1, D = 0), execute/read
    0x00cf_9200_0000_ffff, // 0x10: data, base 0, limit 4 GiB, read/write
];
const CODE_SELECTOR: u16 = 0x08;
const DATA_SELECTOR: u16 = 0x10;
/// CR0.PE: protected mode on. CR0.ET is hard-wired to 1 since the 486. CR0.PG: paging on.
const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
/// CR0.WP: write protection applies to ring 0 too, as it does to ring 3.
const CR0_WP: u64 = 1 << 16;
/// CR4.PAE: 64-bit page table entries, which long mode requires.
const CR4_PAE: u64 = 1 << 5;
/// EFER (MSR 0xc0000080): LME asks for long mode, LMA says it is active. A CPU sets LMA itself
/// when CR0.PG is set with LME; KVM_SET_SREGS takes the end state, so we give both.
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// The page tables, one 4 KiB page per level, in slot 0. A virtual address is cut into 9-bit
/// indexes, one per level (bits 47-39 PML4, 38-30 PDPT, 29-21 page directory), and the low 21
/// bits are the offset in a 2 MiB page.
const PML4_ADDRESS: u64 = 0x2000;
const PDPT_ADDRESS: u64 = 0x3000;
const PD_ADDRESS: u64 = 0x4000;
/// Entry bits: present, writable, and, in a page directory entry, "this maps a 2 MiB page".
const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const PAGE_SIZE_2M: u64 = 1 << 7;
/// The first 2 MiB of guest-physical memory is mapped at virtual 0 and again here, at 1 GiB.
const ALIAS: u64 = 0x4000_0000;

/// COM1, a 16550 UART: its transmit register (a byte written is a byte of output)...
const UART_DATA: u16 = 0x3f8;
/// ...and its line status register. Bit 5, "transmit holding register empty", tells a driver
/// that it may write the next byte. Our UART is never busy: the bit is always set.
const UART_LINE_STATUS: u16 = 0x3fd;
const LSR_THR_EMPTY: u8 = 1 << 5;

/// mini-kvm's hypercall port: `out %al` here with the call number in AL, arguments in BX, CX,
/// SI; the VMM puts the result in AX (book/src/ch02-port-io.md has the table).
const HYPERCALL_PORT: u16 = 0x500;
const HC_EXIT: u8 = 0x00; //    BX = status (0-255): stop the guest
const HC_PUTCHAR: u8 = 0x01; // BL = a character
const HC_PUTNUM: u8 = 0x02; //  BX = a number, printed in decimal
const HC_NEWLINE: u8 = 0x03;
const HC_WRITE: u8 = 0x05; //   BX = pointer, CX = length: print guest memory
/// Errors are negative results: -1 for a call number we do not know, -2 for a pointer outside
/// guest RAM, -3 for a bad argument.
const E_UNKNOWN_CALL: i64 = -1;
const E_FAULT: i64 = -2;
const E_INVALID_ARGUMENT: i64 = -3;

/// The guest: 64-bit code (`as --64`, linked at 0x10000). `mov $imm32, %esi` zero-extends into
/// RSI; `movabs` loads a full 64-bit constant.
const GUEST: &[u8] = &[
    0xbe, 0x37, 0x00, 0x01, 0x00, // mov $message, %esi   0x10037
    0xbf, 0x00, 0x00, 0x10, 0x40, // mov $0x40100000, %edi 1 GiB + 1 MiB: the alias of slot 1
    0xb9, 0x32, 0x00, 0x00, 0x00, // mov $50, %ecx
    0xf3, 0xa4, //                   rep movsb             copy the text there, no VM exit
    0xbb, 0x00, 0x00, 0x10, 0x40, // mov $0x40100000, %ebx a virtual address, for the VMM
    0xb9, 0x32, 0x00, 0x00, 0x00, // mov $50, %ecx
    0x66, 0xba, 0x00, 0x05, //       mov $0x500, %dx
    0xb0, 0x05, //                   mov $5, %al
    0xee, //                         out %al, (%dx)        WRITE(0x40100000, 50)
    0x48, 0xbb, 0x00, 0x00, 0xe8, 0x89, // movabs $10000000000000000000, %rbx
    0x04, 0x23, 0xc7, 0x8a, //       (the rest of its 8 bytes: more than 32 bits can hold)
    0xb0, 0x02, //                   mov $2, %al
    0xee, //                         out %al, (%dx)        PUTNUM
    0xb0, 0x03, //                   mov $3, %al
    0xee, //                         out %al, (%dx)        NEWLINE
    0x31, 0xdb, //                   xor %ebx, %ebx        (zero-extends: RBX = 0)
    0xb0, 0x00, //                   mov $0, %al
    0xee, //                         out %al, (%dx)        EXIT(0)
    b'H', b'e', b'l', b'l', b'o', b' ', b'f', b'r', b'o', b'm', b' ', b'l', b'o', b'n', b'g', b' ',
    b'm', b'o', b'd', b'e', b',', b' ', b't', b'h', b'r', b'o', b'u', b'g', b'h', b' ', b't', b'h',
    b'e', b' ', b'a', b'l', b'i', b'a', b's', b' ', b'a', b't', b' ', b'1', b' ', b'G', b'i', b'B',
    b'!', b'\n', // message, at 0x10037, 50 bytes
];

fn main() -> ExitCode {
    match run() {
        // The guest's EXIT status becomes this process's exit status.
        Ok(status) => ExitCode::from(status),
        Err(message) => {
            eprintln!("ex06: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<u8, String> {
    // Guest RAM is ordinary memory of this process. It is made first so that it is dropped
    // last: KVM points into it for as long as the VM exists.
    let memory = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(SLOT_0.0), SLOT_0.1),
        (GuestAddress(SLOT_1.0), SLOT_1.1),
    ])
    .map_err(|e| format!("cannot map guest memory: {e}"))?;
    memory
        .write_slice(GUEST, GuestAddress(LOAD_ADDRESS))
        .map_err(|e| format!("cannot load the guest: {e}"))?;
    let gdt: Vec<u8> = GDT.iter().flat_map(|entry| entry.to_le_bytes()).collect();
    memory
        .write_slice(&gdt, GuestAddress(GDT_ADDRESS))
        .map_err(|e| format!("cannot write the GDT: {e}"))?;
    write_page_tables(&memory)?;

    let kvm = Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    register_memory(&vm, &memory)?;
    let mut vcpu = create_vcpu(&vm)?;

    print_memory_map();
    run_loop(&mut vcpu, &memory)
}

/// What the guest sees at each guest-physical address.
fn print_memory_map() {
    println!("[vmm] guest-physical memory:");
    let ranges = [
        (
            SLOT_0,
            "slot 0, RAM: GDT 0x1000, page tables 0x2000, program 0x10000",
        ),
        (HOLE, "no slot: an access is an MMIO exit"),
        (SLOT_1, "slot 1, RAM: also at virtual 0x40100000"),
    ];
    for ((start, len), what) in ranges {
        let end = start + len as u64 - 1;
        println!(
            "[vmm]   {start:#08x}-{end:#08x} {:>4} KiB  {what}",
            len / 1024
        );
    }
}

/// KVM_RUN until the guest calls EXIT; returns its status. Each exit is answered here, and the
/// next KVM_RUN finishes the guest's instruction (an `in` gets the value we put in `data`).
fn run_loop(vcpu: &mut VcpuFd, memory: &GuestMemoryMmap) -> Result<u8, String> {
    let mut exits: u64 = 0;
    loop {
        let exit = vcpu.run().map_err(|e| format!("KVM_RUN: {e}"))?;
        exits += 1;
        match exit {
            VcpuExit::IoOut(UART_DATA, data) => {
                let _ = std::io::stdout().write_all(data);
            }
            VcpuExit::IoIn(UART_LINE_STATUS, data) => data[0] = LSR_THR_EMPTY,
            VcpuExit::IoOut(HYPERCALL_PORT, data) => {
                let number = data[0];
                if let Some(status) = hypercall(vcpu, memory, number)? {
                    println!("[vmm] the guest called EXIT({status}) after {exits} VM exits");
                    return Ok(status);
                }
            }
            // No device behind these ports: reads see all ones (as on a PC's empty bus), and
            // writes are dropped.
            VcpuExit::IoIn(_, data) => data.fill(0xff),
            VcpuExit::IoOut(..) => {}
            // A guest-physical address outside every slot: KVM does not know what is there,
            // so it decodes the instruction and asks us. No device here either: the same rule.
            VcpuExit::MmioWrite(address, data) => {
                println!("[vmm] MMIO write at {address:#x}: {data:02x?}, dropped");
            }
            VcpuExit::MmioRead(address, data) => {
                data.fill(0xff);
                println!("[vmm] MMIO read at {address:#x}: answered {data:02x?}");
            }
            // A triple fault: the CPU could deliver neither an exception nor the double fault.
            // The registers still say where it happened. 125 is mini-kvm's status for it.
            VcpuExit::Shutdown => {
                let regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
                let sregs = vcpu
                    .get_sregs()
                    .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
                println!(
                    "[vmm] triple fault (KVM_EXIT_SHUTDOWN) at RIP {:#x}, CR2 = {:#x}",
                    regs.rip, sregs.cr2
                );
                return Ok(125);
            }
            other => return Err(format!("the guest stopped with {other:?}")),
        }
    }
}

/// Runs hypercall `number` with the guest's registers as arguments; `Some(status)` for EXIT.
fn hypercall(vcpu: &VcpuFd, memory: &GuestMemoryMmap, number: u8) -> Result<Option<u8>, String> {
    let mut regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
    let sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    // The arguments are registers as wide as the guest's code: 64 bits in a 64-bit code
    // segment (CS.L = 1, long mode), 32 bits when CS.D = 1, else 16 bits.
    let width_mask = if sregs.cs.l != 0 {
        u64::MAX
    } else if sregs.cs.db != 0 {
        0xffff_ffff
    } else {
        0xffff
    };
    let arg0 = regs.rbx & width_mask;
    let arg1 = regs.rcx & width_mask;
    let mut stdout = std::io::stdout();
    let result = match number {
        HC_EXIT => match u8::try_from(arg0) {
            Ok(status) => return Ok(Some(status)),
            Err(_) => E_INVALID_ARGUMENT,
        },
        HC_PUTCHAR => {
            let _ = stdout.write_all(&[arg0 as u8]);
            0
        }
        HC_PUTNUM => {
            let _ = write!(stdout, "{arg0}");
            0
        }
        HC_NEWLINE => {
            let _ = writeln!(stdout);
            0
        }
        HC_WRITE => {
            // With paging on, a pointer is a virtual address: only the guest's page tables know
            // where it is in guest-physical memory. KVM_TRANSLATE walks them for us.
            match read_virtual(vcpu, memory, arg0, arg1) {
                Some(text) => {
                    let _ = stdout.write_all(&text);
                    arg1 as i64
                }
                None => E_FAULT,
            }
        }
        _ => E_UNKNOWN_CALL,
    };
    // The result goes to AX, where the guest finds it after its `out`. (Negative numbers are
    // all ones at the top: -1 is 0xffff in AX.)
    regs.rax = result as u64;
    vcpu.set_regs(&regs)
        .map_err(|e| format!("KVM_SET_REGS: {e}"))?;
    Ok(None)
}

/// Reads `len` bytes at the guest's virtual address `address`, page by page: each 4 KiB page
/// (the smallest a page can be) is translated on its own, since neighbouring virtual pages may
/// be anywhere in guest-physical memory. None if a page is unmapped or not RAM.
fn read_virtual(
    vcpu: &VcpuFd,
    memory: &GuestMemoryMmap,
    address: u64,
    len: u64,
) -> Option<Vec<u8>> {
    let mut text = Vec::new();
    let mut virt = address;
    let end = address.checked_add(len)?;
    while virt < end {
        let page_end = (virt | 0xfff) + 1;
        let chunk = (page_end.min(end) - virt) as usize;
        let translation = vcpu.translate_gva(virt).ok()?;
        if translation.valid == 0 {
            return None;
        }
        if virt == address {
            println!(
                "[vmm] WRITE: virtual {virt:#x} is guest-physical {:#x}",
                translation.physical_address
            );
        }
        let mut piece = vec![0; chunk];
        memory
            .read_slice(&mut piece, GuestAddress(translation.physical_address))
            .ok()?;
        text.extend_from_slice(&piece);
        virt += chunk as u64;
    }
    Some(text)
}

/// Writes the page tables: PML4[0] -> the PDPT; PDPT[0] and PDPT[1] -> the same page directory,
/// whose entry 0 maps the 2 MiB page at guest-physical 0. So virtual 0-2 MiB and virtual
/// 1 GiB-(1 GiB + 2 MiB) both reach physical 0-2 MiB; every other virtual address is unmapped.
fn write_page_tables(memory: &GuestMemoryMmap) -> Result<(), String> {
    let entries = [
        (PML4_ADDRESS, PDPT_ADDRESS | WRITABLE | PRESENT), // PML4[0]: virtual 0-512 GiB
        (PDPT_ADDRESS, PD_ADDRESS | WRITABLE | PRESENT),   // PDPT[0]: virtual 0-1 GiB
        (
            PDPT_ADDRESS + (ALIAS >> 30) * 8,
            PD_ADDRESS | WRITABLE | PRESENT,
        ), // PDPT[1]: 1-2 GiB, the alias
        (PD_ADDRESS, PAGE_SIZE_2M | PRESENT),              // PD[0]: the 2 MiB page at 0, read-only
    ];
    for (address, entry) in entries {
        memory
            .write_obj(entry, GuestAddress(address))
            .map_err(|e| format!("cannot write the page tables: {e}"))?;
    }
    Ok(())
}

/// Tells KVM where each region of `memory` is in the guest: one memory slot per region.
fn register_memory(vm: &VmFd, memory: &GuestMemoryMmap) -> Result<(), String> {
    for (slot, region) in memory.iter().enumerate() {
        let host_address = memory
            .get_host_address(region.start_addr())
            .map_err(|e| format!("guest memory has no host address: {e}"))?;
        let region = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host_address as u64,
        };
        // SAFETY: the memory stays mapped as long as the VM exists (see `run`).
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION: {e}"))?;
    }
    Ok(())
}

/// Creates vCPU 0 and starts it in 64-bit long mode at RIP = 0x10000.
fn create_vcpu(vm: &VmFd) -> Result<VcpuFd, String> {
    let vcpu = vm
        .create_vcpu(0)
        .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
    // A real CPU gets to long mode through protected mode: CR4.PAE, CR3, EFER.LME, then CR0.PG,
    // then a far jump to a 64-bit code segment. KVM takes the end state in one KVM_SET_SREGS.
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    sregs.gdt.base = GDT_ADDRESS;
    sregs.gdt.limit = (GDT.len() * 8 - 1) as u16;
    sregs.cr3 = PML4_ADDRESS;
    sregs.cr4 = CR4_PAE;
    sregs.efer = EFER_LME | EFER_LMA;
    sregs.cr0 = CR0_PE | CR0_ET | CR0_PG | CR0_WP;
    sregs.cs = flat_segment(CODE_SELECTOR, 0xb); // execute/read, accessed
    sregs.cs.l = 1; // 64-bit code: L = 1 needs D = 0
    sregs.cs.db = 0;
    for segment in [
        &mut sregs.ds,
        &mut sregs.es,
        &mut sregs.fs,
        &mut sregs.gs,
        &mut sregs.ss,
    ] {
        *segment = flat_segment(DATA_SELECTOR, 0x3); // read/write, accessed
    }
    vcpu.set_sregs(&sregs)
        .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
    let mut regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
    regs.rip = LOAD_ADDRESS;
    regs.rsp = LOAD_ADDRESS; // the stack grows down from the program, in slot 0
    regs.rflags = 0x2; // bit 1 is always set; IF = 0: no interrupts
    vcpu.set_regs(&regs)
        .map_err(|e| format!("KVM_SET_REGS: {e}"))?;

    // What KVM now holds, read back rather than assumed.
    let sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    println!(
        "[vmm] vCPU 0: CR0 = {:#x}, CR3 = {:#x}, CR4 = {:#x}, EFER = {:#x}",
        sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer
    );
    println!(
        "[vmm] vCPU 0: CS = {:#04x} ({}-bit), RIP = {:#x}",
        sregs.cs.selector,
        if sregs.cs.l != 0 { 64 } else { 32 },
        regs.rip
    );
    Ok(vcpu)
}

/// A flat segment as KVM takes it: base 0, and a limit of 4 GiB in bytes (KVM wants bytes even
/// when the granularity bit says 4 KiB pages, as in the GDT's 0xfffff).
fn flat_segment(selector: u16, type_: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: 1, // 32-bit
        s: 1,  // a code or data segment, not a system one
        l: 0,
        g: 1, // the limit counts 4 KiB pages
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}
