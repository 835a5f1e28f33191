//! Solution to exercise ex09 of the book "Write a hypervisor with mini-kvm"
//! (book/src/exercises.md): Step 7 with a third vCPU. `cargo run --example ex09_third_cpu`;
//! `diff examples/step07_smp.rs book/solutions/ex09_third_cpu.rs` shows the whole answer.
//!
//! vCPU 2 is a second AP, made like the first. The BSP wakes APIC ID 1, waits until the flag
//! at 0x7000 holds 1, then wakes APIC ID 2 and waits for 2: each AP writes its own APIC ID
//! into the flag when it has printed, so the flag says whose turn is over. Both APs run the
//! same code at 0x8000. Three exits per vCPU, as before: PUTNUM, NEWLINE and EXIT.

use std::io::Write;
use std::process::ExitCode;

use kvm_bindings::{KVM_MP_STATE_UNINITIALIZED, kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// The guest-physical map: two pieces of RAM, each a KVM memory slot, and a hole between them
/// where nothing is mapped. Slot 0 holds the GDT, the page tables, the AP's code (at 0x8000),
/// the BSP's (at 0x10000) and its stack.
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
const GDT: [u64; 4] = [
    0,                     // 0x00: the null descriptor, which the CPU requires
    0x00af_9a00_0000_ffff, // 0x08: code, 64-bit (L = 1, D = 0), execute/read
    0x00cf_9200_0000_ffff, // 0x10: data, base 0, limit 4 GiB, read/write
    0x00cf_9a00_0000_ffff, // 0x18: code, 32-bit (D = 1), for the AP
];
/// The AP loads the GDT itself, with `lgdtl` and this 6-byte pointer: the limit, then the base.
const GDT_POINTER_ADDRESS: u64 = 0x1020;
const CODE_SELECTOR: u16 = 0x08;
const DATA_SELECTOR: u16 = 0x10;
/// CR0.PE: protected mode on. CR0.ET is hard-wired to 1 since the 486. CR0.PG: paging on.
const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
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
/// The local APIC's registers: each CPU sees its own at guest-physical 0xfee00000, a page that
/// KVM's irqchip answers. The BSP maps it at the same virtual address (PDPT[3] -> a second page
/// directory, whose entry 0x1f7 maps the 2 MiB page holding it), uncached, as device registers
/// must be.
const APIC_ADDRESS: u64 = 0xfee0_0000;
const APIC_PD_ADDRESS: u64 = 0x5000;
const CACHE_DISABLE: u64 = 1 << 4;
/// The flag each AP sets to its APIC ID when it has printed; the BSP waits for it.
const AP_DONE_FLAG: u64 = 0x7000;
/// The AP starts where the BSP's STARTUP message says: vector 0x08, so CS = 0x0800, IP = 0,
/// guest-physical 0x8000 (a page below 1 MiB: real mode reaches no higher).
const AP_ADDRESS: u64 = 0x8000;

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
/// Linux's "try again" error number, which KVM_RUN returns when it has no exit to report.
const EAGAIN: i32 = 11;
/// Errors are negative results: -1 for a call number we do not know, -2 for a pointer outside
/// guest RAM, -3 for a bad argument.
const E_UNKNOWN_CALL: i64 = -1;
const E_FAULT: i64 = -2;
const E_INVALID_ARGUMENT: i64 = -3;

/// The BSP's code: 64-bit (`as --64`, linked at 0x10000). The APIC's registers are memory:
/// 0x20 its ID, 0xf0 the spurious-vector register (bit 8 enables the APIC), 0x300 and 0x310
/// the interrupt command register (ICR): the high half names the destination, and writing the
/// low half sends the message. KVM's local APIC delivers each at once, so no waits between them.
const GUEST: &[u8] = &[
    0xbe, 0x00, 0x00, 0xe0, 0xfe, //       mov $0xfee00000, %esi   the local APIC
    0x81, 0x8e, 0xf0, 0x00, 0x00, 0x00, // orl $0x100, 0xf0(%rsi)
    0x00, 0x01, 0x00, 0x00, //                                     enable it
    0x8b, 0x5e, 0x20, //                   mov 0x20(%rsi), %ebx
    0xc1, 0xeb, 0x18, //                   shr $24, %ebx           my APIC ID
    0x66, 0xba, 0x00, 0x05, //             mov $0x500, %dx
    0xb0, 0x02, //                         mov $2, %al
    0xee, //                               out %al, (%dx)          PUTNUM(APIC ID)
    0xb0, 0x03, //                         mov $3, %al
    0xee, //                               out %al, (%dx)          NEWLINE
    0xc7, 0x86, 0x10, 0x03, 0x00, 0x00, // movl $0x01000000, 0x310(%rsi)
    0x00, 0x00, 0x00, 0x01, //                                     ICR high: to APIC ID 1
    0xc7, 0x86, 0x00, 0x03, 0x00, 0x00, // movl $0x4500, 0x300(%rsi)
    0x00, 0x45, 0x00, 0x00, //                                     INIT
    0xc7, 0x86, 0x00, 0x03, 0x00, 0x00, // movl $0x4608, 0x300(%rsi)
    0x08, 0x46, 0x00, 0x00, //                                     STARTUP, vector 0x08
    0xc7, 0x86, 0x00, 0x03, 0x00, 0x00, // movl $0x4608, 0x300(%rsi)
    0x08, 0x46, 0x00, 0x00, //                                     STARTUP again
    0xf3, 0x90, //                         wait1: pause
    0x83, 0x3c, 0x25, 0x00, 0x70, 0x00, // cmpl $1, 0x7000
    0x00, 0x01, //                                                 AP 1's turn over?
    0x75, 0xf4, //                         jne wait1
    0xc7, 0x86, 0x10, 0x03, 0x00, 0x00, // movl $0x02000000, 0x310(%rsi)
    0x00, 0x00, 0x00, 0x02, //                                     ICR high: to APIC ID 2
    0xc7, 0x86, 0x00, 0x03, 0x00, 0x00, // movl $0x4500, 0x300(%rsi)
    0x00, 0x45, 0x00, 0x00, //                                     INIT
    0xc7, 0x86, 0x00, 0x03, 0x00, 0x00, // movl $0x4608, 0x300(%rsi)
    0x08, 0x46, 0x00, 0x00, //                                     STARTUP, vector 0x08
    0xc7, 0x86, 0x00, 0x03, 0x00, 0x00, // movl $0x4608, 0x300(%rsi)
    0x08, 0x46, 0x00, 0x00, //                                     STARTUP again
    0xf3, 0x90, //                         wait2: pause
    0x83, 0x3c, 0x25, 0x00, 0x70, 0x00, // cmpl $2, 0x7000
    0x00, 0x02, //                                                 AP 2's turn over?
    0x75, 0xf4, //                         jne wait2
    0x31, 0xdb, //                         xor %ebx, %ebx
    0xb0, 0x00, //                         mov $0, %al
    0xee, //                               out %al, (%dx)          EXIT(0)
];

/// The AP's code, at 0x8000 (`as --32`). It starts in 16-bit real mode with DS = 0, loads the
/// GDT and turns protected mode on (no paging: virtual is physical), then, in 32-bit code,
/// reads its APIC ID from its own local APIC.
const AP_GUEST: &[u8] = &[
    0xfa, //                               cli                     (.code16)
    0x66, 0x0f, 0x01, 0x16, 0x20, 0x10, // lgdtl 0x1020            the GDT pointer
    0x0f, 0x20, 0xc0, //                   mov %cr0, %eax
    0x66, 0x83, 0xc8, 0x01, //             or $1, %eax             CR0.PE
    0x0f, 0x22, 0xc0, //                   mov %eax, %cr0
    0x66, 0xea, 0x19, 0x80, 0x00, 0x00, // ljmpl $0x18, $0x8019    32-bit code from here
    0x18, 0x00, //
    0x66, 0xb8, 0x10, 0x00, //             mov $0x10, %ax          (.code32)
    0x8e, 0xd8, //                         mov %ax, %ds
    0x8b, 0x1d, 0x20, 0x00, 0xe0, 0xfe, // mov 0xfee00020, %ebx
    0xc1, 0xeb, 0x18, //                   shr $24, %ebx           my APIC ID
    0x66, 0xba, 0x00, 0x05, //             mov $0x500, %dx
    0xb0, 0x02, //                         mov $2, %al
    0xee, //                               out %al, (%dx)          PUTNUM(APIC ID)
    0xb0, 0x03, //                         mov $3, %al
    0xee, //                               out %al, (%dx)          NEWLINE
    0x89, 0x1d, 0x00, 0x70, 0x00, 0x00, // mov %ebx, 0x7000        the flag: my APIC ID
    0x31, 0xdb, //                         xor %ebx, %ebx
    0xb0, 0x00, //                         mov $0, %al
    0xee, //                               out %al, (%dx)          EXIT(0): this vCPU stops
];

fn main() -> ExitCode {
    match run() {
        // The guest's EXIT status becomes this process's exit status.
        Ok(status) => ExitCode::from(status),
        Err(message) => {
            eprintln!("ex09: {message}");
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
    // The GDT pointer for the AP's `lgdtl`, its code at 0x8000, and its flag, down.
    let limit = (GDT.len() * 8 - 1) as u16;
    memory
        .write_obj(limit, GuestAddress(GDT_POINTER_ADDRESS))
        .and_then(|()| memory.write_obj(GDT_ADDRESS as u32, GuestAddress(GDT_POINTER_ADDRESS + 2)))
        .and_then(|()| memory.write_slice(AP_GUEST, GuestAddress(AP_ADDRESS)))
        .and_then(|()| memory.write_obj(0u32, GuestAddress(AP_DONE_FLAG)))
        .map_err(|e| format!("cannot load the AP's code: {e}"))?;
    write_page_tables(&memory)?;

    let kvm = Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    register_memory(&vm, &memory)?;
    // The interrupt controllers, emulated in the kernel. The irqchip must exist before the
    // vCPUs: each gets its local APIC then, with APIC ID = its vCPU id.
    vm.create_irq_chip()
        .map_err(|e| format!("KVM_CREATE_IRQCHIP: {e}"))?;
    println!("[vmm] in the kernel: PIC, IOAPIC, a local APIC per vCPU (KVM_CREATE_IRQCHIP)");
    let mut bsp = create_vcpu(&vm)?;
    let mut ap = create_ap(&vm, 1)?;
    let mut ap2 = create_ap(&vm, 2)?;

    print_memory_map();
    // One thread per vCPU: KVM_RUN blocks its thread for as long as its vCPU runs or waits.
    // Each thread ends when its vCPU calls EXIT; the scope waits for all three.
    let (bsp_end, ap_end, ap2_end) = std::thread::scope(|scope| {
        let memory = &memory;
        let bsp_thread = scope.spawn(move || run_vcpu(0, &mut bsp, memory));
        let ap_thread = scope.spawn(move || run_vcpu(1, &mut ap, memory));
        let ap2_thread = scope.spawn(move || run_vcpu(2, &mut ap2, memory));
        (bsp_thread.join(), ap_thread.join(), ap2_thread.join())
    });
    let (status, bsp_exits) = bsp_end.map_err(|_| "vCPU 0's thread panicked")??;
    let (ap_status, ap_exits) = ap_end.map_err(|_| "vCPU 1's thread panicked")??;
    let (ap2_status, ap2_exits) = ap2_end.map_err(|_| "vCPU 2's thread panicked")??;
    println!("[vmm] vCPU 0 called EXIT({status}) after {bsp_exits} VM exits");
    println!("[vmm] vCPU 1 called EXIT({ap_status}) after {ap_exits} VM exits");
    println!("[vmm] vCPU 2 called EXIT({ap2_status}) after {ap2_exits} VM exits");
    Ok(status)
}

/// A vCPU's thread. If its vCPU fails, the other would wait for it forever: end the process.
fn run_vcpu(index: u32, vcpu: &mut VcpuFd, memory: &GuestMemoryMmap) -> Result<(u8, u64), String> {
    run_loop(vcpu, memory).inspect_err(|message| {
        eprintln!("ex09: vCPU {index}: {message}");
        std::process::exit(1);
    })
}

/// Creates vCPU `id`, an AP. With the irqchip in the kernel, KVM leaves it uninitialized: its
/// KVM_RUN waits in the kernel for INIT (MP state INIT_RECEIVED), then for a STARTUP message,
/// which sets CS:IP to the vector's page, in real mode. So the VMM sets no registers.
fn create_ap(vm: &VmFd, id: u64) -> Result<VcpuFd, String> {
    let vcpu = vm
        .create_vcpu(id)
        .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
    let state = vcpu
        .get_mp_state()
        .map_err(|e| format!("KVM_GET_MP_STATE: {e}"))?;
    let name = if state.mp_state == KVM_MP_STATE_UNINITIALIZED {
        "UNINITIALIZED"
    } else {
        "not UNINITIALIZED"
    };
    println!("[vmm] vCPU {id}: MP state {name}, waits for INIT and STARTUP");
    Ok(vcpu)
}

/// What the guest sees at each guest-physical address.
fn print_memory_map() {
    println!("[vmm] guest-physical memory:");
    let ranges = [
        (
            SLOT_0,
            "slot 0, RAM: GDT 0x1000, page tables 0x2000, AP 0x8000",
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

/// KVM_RUN until this vCPU calls EXIT; returns its status and its number of exits. Each exit is
/// answered here, and the next KVM_RUN finishes the guest's instruction.
fn run_loop(vcpu: &mut VcpuFd, memory: &GuestMemoryMmap) -> Result<(u8, u64), String> {
    let mut exits: u64 = 0;
    loop {
        let exit = match vcpu.run() {
            Ok(exit) => exit,
            // An AP's first KVM_RUN waits in the kernel until INIT arrives, then returns
            // EAGAIN: not an exit, and not an error. Run again, to wait for STARTUP.
            Err(e) if e.errno() == EAGAIN => continue,
            Err(e) => return Err(format!("KVM_RUN: {e}")),
        };
        exits += 1;
        match exit {
            VcpuExit::IoOut(UART_DATA, data) => {
                let _ = std::io::stdout().write_all(data);
            }
            VcpuExit::IoIn(UART_LINE_STATUS, data) => data[0] = LSR_THR_EMPTY,
            VcpuExit::IoOut(HYPERCALL_PORT, data) => {
                let number = data[0];
                if let Some(status) = hypercall(vcpu, memory, number)? {
                    return Ok((status, exits));
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
/// 1 GiB-(1 GiB + 2 MiB) both reach physical 0-2 MiB. PDPT[3] -> a second page directory that
/// maps the local APIC's 2 MiB page; every other virtual address is unmapped.
fn write_page_tables(memory: &GuestMemoryMmap) -> Result<(), String> {
    let entries = [
        (PML4_ADDRESS, PDPT_ADDRESS | WRITABLE | PRESENT), // PML4[0]: virtual 0-512 GiB
        (PDPT_ADDRESS, PD_ADDRESS | WRITABLE | PRESENT),   // PDPT[0]: virtual 0-1 GiB
        (
            PDPT_ADDRESS + (ALIAS >> 30) * 8,
            PD_ADDRESS | WRITABLE | PRESENT,
        ), // PDPT[1]: 1-2 GiB, the alias
        (PD_ADDRESS, PAGE_SIZE_2M | WRITABLE | PRESENT),   // PD[0]: the 2 MiB page at 0
        (
            PDPT_ADDRESS + (APIC_ADDRESS >> 30) * 8,
            APIC_PD_ADDRESS | WRITABLE | PRESENT,
        ), // PDPT[3]: 3-4 GiB
        (
            APIC_PD_ADDRESS + ((APIC_ADDRESS >> 21) & 0x1ff) * 8,
            APIC_ADDRESS | CACHE_DISABLE | PAGE_SIZE_2M | WRITABLE | PRESENT,
        ), // the APIC's 2 MiB page
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
    sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
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
    regs.rflags = 0x2; // bit 1 is always set; IF = 0
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
