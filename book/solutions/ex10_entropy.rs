//! Solution to exercise ex10 of the book "Write a hypervisor with mini-kvm"
//! (book/src/exercises.md): Step 8 with a second virtio device, an entropy device.
//! `cargo run --example ex10_entropy`; `diff examples/step08_virtio.rs
//! book/solutions/ex10_entropy.rs` shows the whole answer.
//!
//! The two devices share the transport's code (`Transport`, the registers of virtio-mmio), the
//! vCPU's loop, which sends each MMIO exit to the device whose page it is in, and the code of a
//! device's thread (`serve_device`). Each has of its own: a page of registers (the console at
//! 0x20000, the entropy device at 0x21000), a device ID (3, 4), its queues and the rings the
//! guest gives them, a doorbell (an ioeventfd on its own QueueNotify, whose datamatch is the
//! index of the queue it serves: 1, 0), an interrupt line (an irqfd on GSI 5, 6, which the guest
//! takes as vector 0x25, 0x26) and a thread. The guest sets both up with the same handshake,
//! prints its line through the console, then asks the entropy device for 16 bytes and exits
//! with the length the device put in the used ring: EXIT(16). The entropy device costs 22 exits,
//! as the console does: 20 for the handshake, 2 in its interrupt handler.

use std::fs::File;
use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use kvm_bindings::{kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::{IoEventAddress, Kvm, VcpuExit, VcpuFd, VmFd};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

/// The guest-physical map: two pieces of RAM, each a KVM memory slot, and between them a hole
/// where nothing is mapped. The devices' registers are the hole's first two pages. Slot 0 holds
/// the GDT, the page tables, the IDT, the program (at 0x10000) and its stack; slot 1, the
/// virtqueues and the buffer the entropy device fills.
const SLOT_0: (u64, usize) = (0x0, 0x20000); //        128 KiB
const CONSOLE: (u64, usize) = (0x20000, 0x1000); //    4 KiB: the virtio console's registers
const ENTROPY: (u64, usize) = (0x21000, 0x1000); //    4 KiB: the entropy device's registers
const HOLE: (u64, usize) = (0x22000, 0xde000); //      888 KiB of nothing
const SLOT_1: (u64, usize) = (0x100000, 0x1000); //    4 KiB at 1 MiB
/// The guest is loaded at guest-physical 0x10000, and starts there: RIP = 0x10000, a virtual
/// address that the page tables map to the same physical one.
const LOAD_ADDRESS: u64 = 0x10000;

/// The GDT, the guest's table of segment descriptors, at guest-physical 0x1000. KVM does not
/// read it: KVM_SET_SREGS gives it each segment's base, limit and type directly.
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
/// CR4.PAE: 64-bit page table entries, which long mode requires.
const CR4_PAE: u64 = 1 << 5;
/// EFER (MSR 0xc0000080): LME asks for long mode, LMA says it is active. A CPU sets LMA itself
/// when CR0.PG is set with LME; KVM_SET_SREGS takes the end state, so we give both.
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// The page tables, one 4 KiB page per level, in slot 0: PML4 -> PDPT -> page directory,
/// whose entry 0 maps the 2 MiB page at guest-physical 0 to virtual 0. It covers both slots and
/// the devices' registers.
const PML4_ADDRESS: u64 = 0x2000;
const PDPT_ADDRESS: u64 = 0x3000;
const PD_ADDRESS: u64 = 0x4000;
/// Entry bits: present, writable, and, in a page directory entry, "this maps a 2 MiB page".
const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const PAGE_SIZE_2M: u64 = 1 << 7;
/// The IDT, at 0x5000, with two 16-byte gates: the devices' vectors. The guest programs the PIC
/// to deliver IRQ 0-7 as vectors 0x20-0x27, so the console's IRQ 5 is vector 0x25, and the
/// entropy device's IRQ 6 is vector 0x26.
const IDT_ADDRESS: u64 = 0x5000;
const CONSOLE_VECTOR: u64 = 0x25;
const ENTROPY_VECTOR: u64 = 0x26;
/// Where the guest's interrupt handlers are (the labels `handler` and `handler2` below).
const CONSOLE_HANDLER: u64 = 0x1022f;
const ENTROPY_HANDLER: u64 = 0x10247;
/// A gate's type and attributes: present (bit 7), DPL 0, type 0xe, a 64-bit interrupt gate
/// (which clears IF while the handler runs).
const INTERRUPT_GATE: u64 = 0x8e;

/// The console's interrupt line: GSI 5, which KVM's default routing wires to pin 5 of the PIC
/// and of the IOAPIC. No other device of this VM uses it (mini-kvm's first virtio device has it
/// too). The entropy device's is GSI 6, pin 6: a line of its own, so that each handler knows
/// which device interrupted.
const CONSOLE_GSI: u32 = 5;
const ENTROPY_GSI: u32 = 6;

/// The virtio-mmio transport, version 2 (virtio 1.2, §4.2.2): 32-bit registers at these
/// offsets in the device's page (R: the driver reads it, W: writes it), then from 0x100 the
/// device's own configuration (a console's holds its size, with a feature bit ours lacks).
const MAGIC_VALUE: u64 = 0x000; //         R: 0x74726976, "virt" in little-endian ASCII
const VERSION: u64 = 0x004; //             R: 2, the modern transport (1 was the legacy one)
const DEVICE_ID: u64 = 0x008; //           R: what the device is: 3, a console; 4, entropy
const VENDOR_ID: u64 = 0x00c; //           R: who made it (this one says 0)
const DEVICE_FEATURES: u64 = 0x010; //     R: 32 of the device's feature bits...
const DEVICE_FEATURES_SEL: u64 = 0x014; // W: ...which 32: 0 for bits 0-31, 1 for 32-63
const DRIVER_FEATURES: u64 = 0x020; //     W: 32 of the bits the driver accepts...
const DRIVER_FEATURES_SEL: u64 = 0x024; // W: ...which 32
const QUEUE_SEL: u64 = 0x030; //           W: the queue the Queue* registers are about
const QUEUE_NUM_MAX: u64 = 0x034; //       R: its largest size (0: no such queue)
const QUEUE_NUM: u64 = 0x038; //           W: the size the driver chose
const QUEUE_READY: u64 = 0x044; //         RW: 1: the device may use the queue
const QUEUE_NOTIFY: u64 = 0x050; //        W: "queue N has new buffers", N the value written
const INTERRUPT_STATUS: u64 = 0x060; //    R: why the device interrupted (bit 0: used buffers)
const INTERRUPT_ACK: u64 = 0x064; //       W: the bits of it the driver has handled
const STATUS: u64 = 0x070; //              RW: the driver's progress; writing 0 resets
const QUEUE_DESC_LOW: u64 = 0x080; //      W: the descriptor table's address (and 0x084)
const QUEUE_DRIVER_LOW: u64 = 0x090; //    W: the available ring's, the "driver area" (0x094)
const QUEUE_DEVICE_LOW: u64 = 0x0a0; //    W: the used ring's, the "device area" (0x0a4)
const QUEUE_DESC_HIGH: u64 = 0x084;
const QUEUE_DRIVER_HIGH: u64 = 0x094;
const QUEUE_DEVICE_HIGH: u64 = 0x0a4;

/// A console (virtio 1.2, §5.3) has two queues for its first port: receiveq (0), which the
/// driver fills with empty buffers for input, and transmitq (1), its output. This one only
/// serves transmitq: it has no input to give.
const DEVICE_ID_CONSOLE: u32 = 3;
const TRANSMIT_QUEUE: usize = 1;
/// An entropy device (virtio 1.2, §5.4) has one queue, requestq (0): the driver puts empty
/// buffers on it, which the device fills with random bytes.
const DEVICE_ID_ENTROPY: u32 = 4;
const REQUEST_QUEUE: usize = 0;
const QUEUE_SIZE: u16 = 16;
/// The only feature bit offered: VIRTIO_F_VERSION_1 (bit 32), "this is a virtio 1.x device".
const VERSION_1: u64 = 1 << 32;
/// Status bits: ACKNOWLEDGE (1) and DRIVER (2) only record progress; FEATURES_OK (8) sticks
/// only if the driver's features suit the device; DRIVER_OK (4): the device may work.
const DRIVER_OK: u32 = 4;
const FEATURES_OK: u32 = 8;
/// InterruptStatus bit 0, "used buffer notification": a queue's used ring has moved.
const USED_BUFFER: u32 = 1;
/// The most bytes of one buffer the console prints, or the entropy device fills: the guest
/// chooses the lengths, the VMM bounds what it copies.
const MAX_BUFFER: u64 = 4096;

/// mini-kvm's hypercall port: `out %al` here with the call number in AL. The guest now prints
/// through the console, so the one call left is EXIT, with the status in BX.
const HYPERCALL_PORT: u16 = 0x500;
const HC_EXIT: u8 = 0x00;

/// The guest, the driver of both devices: 64-bit code (`as --64`, linked at 0x10000). RSI holds
/// the console's registers' address, 0x20000, and RDI the entropy device's, 0x21000. Their
/// virtqueues, 4 entries each, are in slot 1: the console's descriptor table at 0x100000 (16
/// bytes an entry), available ring at 0x100040 (flags, idx, ring[4]) and used ring at 0x100080
/// (flags, idx, ring[4] of {id, len}); the entropy device's at 0x100100, 0x100140 and 0x100180,
/// and the buffer it fills at 0x100200. Slot 1 starts zeroed, as rings must.
const GUEST: &[u8] = &[
    0xbe, 0x00, 0x00, 0x02, 0x00, //             mov $0x20000, %esi     the console
    0x81, 0x3e, 0x76, 0x69, 0x72, 0x74, //       cmpl $0x74726976, (%rsi) MagicValue: "virt"?
    0x0f, 0x85, 0x12, 0x02, 0x00, 0x00, //       jne fail
    0x83, 0x7e, 0x04, 0x02, //                   cmpl $2, 0x4(%rsi)     Version: 2?
    0x0f, 0x85, 0x08, 0x02, 0x00, 0x00, //       jne fail
    0x83, 0x7e, 0x08, 0x03, //                   cmpl $3, 0x8(%rsi)     DeviceID: a console?
    0x0f, 0x85, 0xfe, 0x01, 0x00, 0x00, //       jne fail
    0xc7, 0x46, 0x70, 0x00, 0x00, 0x00, 0x00, // movl $0, 0x70(%rsi)    Status: reset
    0xc7, 0x46, 0x70, 0x01, 0x00, 0x00, 0x00, // movl $1, 0x70(%rsi)    ACKNOWLEDGE
    0xc7, 0x46, 0x70, 0x03, 0x00, 0x00, 0x00, // movl $3, 0x70(%rsi)    ... | DRIVER
    0xc7, 0x46, 0x14, 0x01, 0x00, 0x00, 0x00, // movl $1, 0x14(%rsi)    DeviceFeaturesSel: 1
    0xf7, 0x46, 0x10, 0x01, 0x00, 0x00, 0x00, // testl $1, 0x10(%rsi)   VERSION_1 offered?
    0x0f, 0x84, 0xd5, 0x01, 0x00, 0x00, //       jz fail
    0xc7, 0x46, 0x24, 0x01, 0x00, 0x00, 0x00, // movl $1, 0x24(%rsi)    DriverFeaturesSel: 1
    0xc7, 0x46, 0x20, 0x01, 0x00, 0x00, 0x00, // movl $1, 0x20(%rsi)    DriverFeatures: bit 32
    0xc7, 0x46, 0x70, 0x0b, 0x00, 0x00, 0x00, // movl $0xb, 0x70(%rsi)  ... | FEATURES_OK
    0xf7, 0x46, 0x70, 0x08, 0x00, 0x00, 0x00, // testl $8, 0x70(%rsi)   did FEATURES_OK stick?
    0x0f, 0x84, 0xb3, 0x01, 0x00, 0x00, //       jz fail
    0xc7, 0x46, 0x30, 0x01, 0x00, 0x00, 0x00, // movl $1, 0x30(%rsi)    QueueSel: 1, transmitq
    0x83, 0x7e, 0x34, 0x04, //                   cmpl $4, 0x34(%rsi)    QueueNumMax >= 4?
    0x0f, 0x82, 0xa2, 0x01, 0x00, 0x00, //       jb fail
    0xc7, 0x46, 0x38, 0x04, 0x00, 0x00, 0x00, // movl $4, 0x38(%rsi)    QueueNum: 4 entries
    0xc7, 0x86, 0x80, 0x00, 0x00, 0x00, 0x00, // movl $0x100000, 0x80(%rsi) QueueDescLow
    0x00, 0x10, 0x00, //
    0xc7, 0x86, 0x90, 0x00, 0x00, 0x00, 0x40, // movl $0x100040, 0x90(%rsi) QueueDriverLow
    0x00, 0x10, 0x00, //
    0xc7, 0x86, 0xa0, 0x00, 0x00, 0x00, 0x80, // movl $0x100080, 0xa0(%rsi) QueueDeviceLow
    0x00, 0x10, 0x00, //
    0xc7, 0x46, 0x44, 0x01, 0x00, 0x00, 0x00, // movl $1, 0x44(%rsi)    QueueReady
    0xc7, 0x46, 0x70, 0x0f, 0x00, 0x00, 0x00, // movl $0xf, 0x70(%rsi)  ... | DRIVER_OK
    0xbf, 0x00, 0x10, 0x02, 0x00, //             mov $0x21000, %edi     the entropy device
    0x81, 0x3f, 0x76, 0x69, 0x72, 0x74, //       cmpl $0x74726976, (%rdi) MagicValue: "virt"?
    0x0f, 0x85, 0x5e, 0x01, 0x00, 0x00, //       jne fail
    0x83, 0x7f, 0x04, 0x02, //                   cmpl $2, 0x4(%rdi)     Version: 2?
    0x0f, 0x85, 0x54, 0x01, 0x00, 0x00, //       jne fail
    0x83, 0x7f, 0x08, 0x04, //                   cmpl $4, 0x8(%rdi)     DeviceID: entropy?
    0x0f, 0x85, 0x4a, 0x01, 0x00, 0x00, //       jne fail
    0xc7, 0x47, 0x70, 0x00, 0x00, 0x00, 0x00, // movl $0, 0x70(%rdi)    Status: reset
    0xc7, 0x47, 0x70, 0x01, 0x00, 0x00, 0x00, // movl $1, 0x70(%rdi)    ACKNOWLEDGE
    0xc7, 0x47, 0x70, 0x03, 0x00, 0x00, 0x00, // movl $3, 0x70(%rdi)    ... | DRIVER
    0xc7, 0x47, 0x14, 0x01, 0x00, 0x00, 0x00, // movl $1, 0x14(%rdi)    DeviceFeaturesSel: 1
    0xf7, 0x47, 0x10, 0x01, 0x00, 0x00, 0x00, // testl $1, 0x10(%rdi)   VERSION_1 offered?
    0x0f, 0x84, 0x21, 0x01, 0x00, 0x00, //       jz fail
    0xc7, 0x47, 0x24, 0x01, 0x00, 0x00, 0x00, // movl $1, 0x24(%rdi)    DriverFeaturesSel: 1
    0xc7, 0x47, 0x20, 0x01, 0x00, 0x00, 0x00, // movl $1, 0x20(%rdi)    DriverFeatures: bit 32
    0xc7, 0x47, 0x70, 0x0b, 0x00, 0x00, 0x00, // movl $0xb, 0x70(%rdi)  ... | FEATURES_OK
    0xf7, 0x47, 0x70, 0x08, 0x00, 0x00, 0x00, // testl $8, 0x70(%rdi)   did FEATURES_OK stick?
    0x0f, 0x84, 0xff, 0x00, 0x00, 0x00, //       jz fail
    0xc7, 0x47, 0x30, 0x00, 0x00, 0x00, 0x00, // movl $0, 0x30(%rdi)    QueueSel: 0, requestq
    0x83, 0x7f, 0x34, 0x04, //                   cmpl $4, 0x34(%rdi)    QueueNumMax >= 4?
    0x0f, 0x82, 0xee, 0x00, 0x00, 0x00, //       jb fail
    0xc7, 0x47, 0x38, 0x04, 0x00, 0x00, 0x00, // movl $4, 0x38(%rdi)    QueueNum: 4 entries
    0xc7, 0x87, 0x80, 0x00, 0x00, 0x00, 0x00, // movl $0x100100, 0x80(%rdi) QueueDescLow
    0x01, 0x10, 0x00, //
    0xc7, 0x87, 0x90, 0x00, 0x00, 0x00, 0x40, // movl $0x100140, 0x90(%rdi) QueueDriverLow
    0x01, 0x10, 0x00, //
    0xc7, 0x87, 0xa0, 0x00, 0x00, 0x00, 0x80, // movl $0x100180, 0xa0(%rdi) QueueDeviceLow
    0x01, 0x10, 0x00, //
    0xc7, 0x47, 0x44, 0x01, 0x00, 0x00, 0x00, // movl $1, 0x44(%rdi)    QueueReady
    0xc7, 0x47, 0x70, 0x0f, 0x00, 0x00, 0x00, // movl $0xf, 0x70(%rdi)  ... | DRIVER_OK
    0xb0, 0x11, //                               mov $0x11, %al
    0xe6, 0x20, //                               out %al, $0x20         PIC ICW1: initialise
    0xb0, 0x20, //                               mov $0x20, %al
    0xe6, 0x21, //                               out %al, $0x21         ICW2: IRQ 0 = 0x20
    0xb0, 0x04, //                               mov $0x04, %al
    0xe6, 0x21, //                               out %al, $0x21         ICW3: 2nd PIC on IRQ 2
    0xb0, 0x01, //                               mov $0x01, %al
    0xe6, 0x21, //                               out %al, $0x21         ICW4: 8086 mode
    0xb0, 0x9f, //                               mov $0x9f, %al
    0xe6, 0x21, //                               out %al, $0x21         unmask IRQs 5, 6 only
    0x48, 0xc7, 0x04, 0x25, 0x00, 0x00, 0x10, // movq $message, 0x100000 descriptor 0: address
    0x00, 0x5f, 0x02, 0x01, 0x00, //
    0xc7, 0x04, 0x25, 0x08, 0x00, 0x10, 0x00, // movl $19, 0x100008     length; flags 0
    0x13, 0x00, 0x00, 0x00, //
    0x66, 0xc7, 0x04, 0x25, 0x44, 0x00, 0x10, // movw $0, 0x100044      avail.ring[0]: desc. 0
    0x00, 0x00, 0x00, //
    0x66, 0xc7, 0x04, 0x25, 0x42, 0x00, 0x10, // movw $1, 0x100042      avail.idx: 1 offered
    0x00, 0x01, 0x00, //
    0x45, 0x31, 0xff, //                         xor %r15d, %r15d       the handler sets R15
    0xc7, 0x46, 0x50, 0x01, 0x00, 0x00, 0x00, // movl $1, 0x50(%rsi)    QueueNotify: no exit
    0x45, 0x85, 0xff, //                         wait: test %r15d, %r15d has the handler run?
    0x75, 0x05, //                               jnz asked
    0xfb, //                                     sti                    IF = 1 after the next
    0xf4, //                                     hlt                    instruction: sleep
    0xfa, //                                     cli
    0xeb, 0xf6, //                               jmp wait
    0x48, 0xc7, 0x04, 0x25, 0x00, 0x01, 0x10, // asked: movq $0x100200, 0x100100 its desc. 0
    0x00, 0x00, 0x02, 0x10, 0x00, //
    0xc7, 0x04, 0x25, 0x08, 0x01, 0x10, 0x00, // movl $16, 0x100108     length 16
    0x10, 0x00, 0x00, 0x00, //
    0x66, 0xc7, 0x04, 0x25, 0x0c, 0x01, 0x10, // movw $2, 0x10010c      flags: WRITE
    0x00, 0x02, 0x00, //
    0x66, 0xc7, 0x04, 0x25, 0x44, 0x01, 0x10, // movw $0, 0x100144      avail.ring[0]: desc. 0
    0x00, 0x00, 0x00, //
    0x66, 0xc7, 0x04, 0x25, 0x42, 0x01, 0x10, // movw $1, 0x100142      avail.idx: 1 offered
    0x00, 0x01, 0x00, //
    0x45, 0x31, 0xf6, //                         xor %r14d, %r14d       its handler sets R14
    0xc7, 0x47, 0x50, 0x00, 0x00, 0x00, 0x00, // movl $0, 0x50(%rdi)    QueueNotify: no exit
    0x45, 0x85, 0xf6, //                         wait2: test %r14d, %r14d has it run?
    0x75, 0x05, //                               jnz done
    0xfb, //                                     sti
    0xf4, //                                     hlt
    0xfa, //                                     cli
    0xeb, 0xf6, //                               jmp wait2
    0x66, 0x83, 0x3c, 0x25, 0x82, 0x00, 0x10, // done: cmpw $1, 0x100082 console used.idx = 1?
    0x00, 0x01, //
    0x75, 0x14, //                               jne fail
    0x66, 0x83, 0x3c, 0x25, 0x82, 0x01, 0x10, // cmpw $1, 0x100182      entropy used.idx = 1?
    0x00, 0x01, //
    0x75, 0x09, //                               jne fail
    0x8b, 0x1c, 0x25, 0x88, 0x01, 0x10, 0x00, // mov 0x100188, %ebx     used.ring[0].len
    0xeb, 0x05, //                               jmp exit
    0xbb, 0x01, 0x00, 0x00, 0x00, //             fail: mov $1, %ebx
    0x66, 0xba, 0x00, 0x05, //                   exit: mov $0x500, %dx
    0xb0, 0x00, //                               mov $0, %al
    0xee, //                                     out %al, (%dx)         EXIT(BX)
    0x44, 0x8b, 0x3c, 0x25, 0x60, 0x00, 0x02, // handler: mov 0x20060, %r15d InterruptStatus
    0x00, //
    0x44, 0x89, 0x3c, 0x25, 0x64, 0x00, 0x02, // mov %r15d, 0x20064     InterruptACK: handled
    0x00, //
    0x50, //                                     push %rax
    0xb0, 0x20, //                               mov $0x20, %al
    0xe6, 0x20, //                               out %al, $0x20         end of interrupt (PIC)
    0x58, //                                     pop %rax
    0x48, 0xcf, //                               iretq
    0x44, 0x8b, 0x34, 0x25, 0x60, 0x10, 0x02, // handler2: mov 0x21060, %r14d InterruptStatus
    0x00, //
    0x44, 0x89, 0x34, 0x25, 0x64, 0x10, 0x02, // mov %r14d, 0x21064     InterruptACK: handled
    0x00, //
    0x50, //                                     push %rax
    0xb0, 0x20, //                               mov $0x20, %al
    0xe6, 0x20, //                               out %al, $0x20         end of interrupt (PIC)
    0x58, //                                     pop %rax
    0x48, 0xcf, //                               iretq
    b'H', b'e', b'l', b'l', b'o', b' ', b'f', b'r', b'o', b'm', b' ', b'v', b'i', b'r', b't', b'i',
    b'o', b'!', b'\n', // message, at 0x1025f, 19 bytes
];

fn main() -> ExitCode {
    match run() {
        // The guest's EXIT status becomes this process's exit status.
        Ok(status) => ExitCode::from(status),
        Err(message) => {
            eprintln!("ex10: {message}");
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
    write_idt(&memory)?;

    let kvm = Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    register_memory(&vm, &memory)?;
    // The interrupt controllers, emulated in the kernel, before the vCPU (which gets its local
    // APIC then). An irqfd needs them: it raises a line of theirs.
    vm.create_irq_chip()
        .map_err(|e| format!("KVM_CREATE_IRQCHIP: {e}"))?;
    println!("[vmm] in the kernel: PIC, IOAPIC, local APIC (KVM_CREATE_IRQCHIP)");

    let console = Device::new(
        &vm,
        "console",
        CONSOLE,
        DEVICE_ID_CONSOLE,
        (2, TRANSMIT_QUEUE),
        CONSOLE_GSI,
        print_buffers,
    )?;
    let entropy = Device::new(
        &vm,
        "entropy",
        ENTROPY,
        DEVICE_ID_ENTROPY,
        (1, REQUEST_QUEUE),
        ENTROPY_GSI,
        fill_buffers,
    )?;
    let mut vcpu = create_vcpu(&vm)?;
    print_memory_map();

    let devices = [&console, &entropy];
    let stop = AtomicBool::new(false);
    let end = std::thread::scope(|scope| {
        for device in devices {
            let (memory, stop) = (&memory, &stop);
            scope.spawn(move || {
                serve_device(device, memory, stop).inspect_err(|e| {
                    // The guest would wait for the interrupt for ever: end the process.
                    eprintln!("ex10: the {} thread: {e}", device.name);
                    std::process::exit(1);
                })
            });
        }
        let end = run_loop(&mut vcpu, &devices);
        // The devices' threads sleep on their doorbells: ring each once more, to stop it.
        stop.store(true, Ordering::Release);
        for device in devices {
            let _ = device.doorbell.write(1);
        }
        end
    });
    let (status, exits) = end?;
    println!("[vmm] the guest called EXIT({status}) after {exits} VM exits");
    Ok(status)
}

/// One virtio device of the VM, with what it has of its own: its page of registers, its
/// transport's state and queues, the queue it serves, its doorbell and its interrupt line.
struct Device {
    /// For the log: "console" or "entropy".
    name: &'static str,
    registers: (u64, usize),
    transport: Mutex<Transport>,
    /// The index of the queue the device serves, which its doorbell's datamatch is.
    queue: usize,
    gsi: u32,
    doorbell: EventFd,
    interrupt: EventFd,
    /// What the device does with the buffers on its queue; returns how many it served.
    work: fn(&mut Queue, &GuestMemoryMmap) -> Result<usize, String>,
}

impl Device {
    /// A device at `registers` with `queues.0` queues, of which it serves `queues.1`: its
    /// ioeventfd on QueueNotify, with the served queue's index as datamatch, and its irqfd.
    fn new(
        vm: &VmFd,
        name: &'static str,
        registers: (u64, usize),
        device_id: u32,
        queues: (usize, usize),
        gsi: u32,
        work: fn(&mut Queue, &GuestMemoryMmap) -> Result<usize, String>,
    ) -> Result<Device, String> {
        // The doorbell: KVM signals this eventfd when the guest writes the queue's index, a
        // 32-bit value, to this device's QueueNotify, and the write costs no exit. Other values
        // are other queues' doorbells, which reach us as ordinary MMIO exits.
        let doorbell = EventFd::new(0).map_err(|e| format!("eventfd: {e}"))?;
        let notify = IoEventAddress::Mmio(registers.0 + QUEUE_NOTIFY);
        vm.register_ioevent(&doorbell, &notify, queues.1 as u32)
            .map_err(|e| format!("KVM_IOEVENTFD: {e}"))?;
        // The interrupt: a write to this eventfd, from any thread, raises the device's GSI.
        let interrupt = EventFd::new(0).map_err(|e| format!("eventfd: {e}"))?;
        vm.register_irqfd(&interrupt, gsi)
            .map_err(|e| format!("KVM_IRQFD: {e}"))?;
        println!(
            "[vmm] virtio {name} at {:#x}: an ioeventfd on QueueNotify ({:#x}), an irqfd on GSI \
             {gsi}",
            registers.0,
            registers.0 + QUEUE_NOTIFY,
        );
        Ok(Device {
            name,
            registers,
            transport: Mutex::new(Transport::new(device_id, queues.0)),
            queue: queues.1,
            gsi,
            doorbell,
            interrupt,
            work,
        })
    }

    fn contains(&self, address: u64) -> bool {
        (self.registers.0..self.registers.0 + self.registers.1 as u64).contains(&address)
    }
}

/// A device's thread: it sleeps in read(2) on the doorbell, and serves the device's queue each
/// time KVM signals it. Several signals before a read add up and read as one: the device then
/// takes whatever the available ring holds. The console's thread and the entropy device's run
/// this same code, each on its own device.
fn serve_device(
    device: &Device,
    memory: &GuestMemoryMmap,
    stop: &AtomicBool,
) -> Result<(), String> {
    loop {
        device
            .doorbell
            .read()
            .map_err(|e| format!("read the ioeventfd: {e}"))?;
        if stop.load(Ordering::Acquire) {
            return Ok(());
        }
        println!(
            "[vmm] {} thread: the doorbell rang (QueueNotify)",
            device.name
        );
        let mut transport = device
            .transport
            .lock()
            .map_err(|_| "the device's lock is poisoned")?;
        if transport.serve(device.queue, memory, device.work)? > 0 {
            transport.interrupt_status |= USED_BUFFER;
            println!(
                "[vmm] {} thread: InterruptStatus = 0x1, GSI {} raised through the irqfd",
                device.name, device.gsi
            );
            device
                .interrupt
                .write(1)
                .map_err(|e| format!("write the irqfd: {e}"))?;
        }
    }
}

/// The virtio-mmio transport of one device, as its driver sees it: the registers, and the
/// queues (the virtio-queue crate keeps each queue's registers, and walks its rings in guest
/// memory). Both devices use it; only their device ID and number of queues differ.
struct Transport {
    device_id: u32,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: Vec<Queue>,
    interrupt_status: u32,
}

impl Transport {
    /// A device just after reset: nothing agreed, no queue ready.
    fn new(device_id: u32, queues: usize) -> Transport {
        let queue = || Queue::new(QUEUE_SIZE).expect("16 is a valid queue size");
        Transport {
            device_id,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues: (0..queues).map(|_| queue()).collect(),
            interrupt_status: 0,
        }
    }

    /// A register the driver reads. Write-only and unknown registers read as 0.
    fn read(&self, offset: u64) -> u32 {
        let queue = self.queues.get(self.queue_sel as usize);
        match offset {
            MAGIC_VALUE => u32::from_le_bytes(*b"virt"),
            VERSION => 2,
            DEVICE_ID => self.device_id,
            DEVICE_FEATURES if self.device_features_sel < 2 => {
                (VERSION_1 >> (32 * self.device_features_sel)) as u32
            }
            QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready())),
            INTERRUPT_STATUS => self.interrupt_status,
            STATUS => self.status,
            _ => 0,
        }
    }

    /// A register the driver writes. Read-only and unknown registers ignore it.
    fn write(&mut self, offset: u64, value: u32) {
        match offset {
            DEVICE_FEATURES_SEL => self.device_features_sel = value,
            DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            DRIVER_FEATURES if self.driver_features_sel < 2 => {
                let shift = 32 * self.driver_features_sel;
                self.driver_features &= !(0xffff_ffff << shift);
                self.driver_features |= u64::from(value) << shift;
            }
            QUEUE_SEL => self.queue_sel = value,
            // The crate refuses a size that is not a power of two up to 16 (or 0, here for
            // what does not fit in 16 bits): the size stays as it was.
            QUEUE_NUM => self.with_queue(|q| q.set_size(u16::try_from(value).unwrap_or(0))),
            QUEUE_READY => self.with_queue(|q| q.set_ready(value == 1)),
            QUEUE_DESC_LOW => self.with_queue(|q| q.set_desc_table_address(Some(value), None)),
            QUEUE_DESC_HIGH => self.with_queue(|q| q.set_desc_table_address(None, Some(value))),
            QUEUE_DRIVER_LOW => self.with_queue(|q| q.set_avail_ring_address(Some(value), None)),
            QUEUE_DRIVER_HIGH => self.with_queue(|q| q.set_avail_ring_address(None, Some(value))),
            QUEUE_DEVICE_LOW => self.with_queue(|q| q.set_used_ring_address(Some(value), None)),
            QUEUE_DEVICE_HIGH => self.with_queue(|q| q.set_used_ring_address(None, Some(value))),
            INTERRUPT_ACK => self.interrupt_status &= !value,
            STATUS if value == 0 => *self = Transport::new(self.device_id, self.queues.len()),
            // FEATURES_OK sticks only if the driver accepted VERSION_1 and nothing we did not
            // offer; a driver reads Status back to know.
            STATUS if self.driver_features != VERSION_1 => self.status = value & !FEATURES_OK,
            STATUS => self.status = value,
            _ => {}
        }
    }

    /// Changes the queue QueueSel names, if the device has it.
    fn with_queue(&mut self, change: impl FnOnce(&mut Queue)) {
        if let Some(queue) = self.queues.get_mut(self.queue_sel as usize) {
            change(queue);
        }
    }

    /// The driver rang the doorbell of queue `index`: if the device may use it, let `work`
    /// serve its buffers, and say how many there were.
    fn serve(
        &mut self,
        index: usize,
        memory: &GuestMemoryMmap,
        work: fn(&mut Queue, &GuestMemoryMmap) -> Result<usize, String>,
    ) -> Result<usize, String> {
        // The device must not touch a queue before DRIVER_OK and QueueReady, nor rings that
        // are not in guest RAM (or not aligned).
        let queue = &mut self.queues[index];
        if self.status & DRIVER_OK == 0 || !queue.ready() || !queue.is_valid(memory) {
            return Ok(0);
        }
        work(queue, memory)
    }
}

/// The console's work, on transmitq: print each buffer on the available ring, and give each
/// back on the used ring.
fn print_buffers(queue: &mut Queue, memory: &GuestMemoryMmap) -> Result<usize, String> {
    let mut served = 0;
    // Each available entry is the head of a chain of descriptors: one buffer, in pieces.
    while let Some(chain) = queue.pop_descriptor_chain(memory) {
        let head = chain.head_index();
        let mut text = Vec::new();
        if let Ok(reader) = chain.reader(memory) {
            let _ = reader.take(MAX_BUFFER).read_to_end(&mut text);
        }
        println!(
            "[vmm] console thread: transmitq, descriptor {head}: {} bytes",
            text.len()
        );
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(&text).and_then(|()| stdout.flush());
        // The used length counts the bytes the device wrote into the buffer: none here.
        queue
            .add_used(memory, head, 0)
            .map_err(|e| format!("the used ring: {e}"))?;
        served += 1;
    }
    Ok(served)
}

/// The entropy device's work, on requestq: fill the device-writable buffers of each chain with
/// random bytes from the host's /dev/urandom, and give the chain back with how many bytes it
/// wrote. The bytes differ from run to run; the log says only how many there were.
fn fill_buffers(queue: &mut Queue, memory: &GuestMemoryMmap) -> Result<usize, String> {
    let mut source = File::open("/dev/urandom").map_err(|e| format!("/dev/urandom: {e}"))?;
    let mut served = 0;
    while let Some(chain) = queue.pop_descriptor_chain(memory) {
        let head = chain.head_index();
        // The writer sees only the chain's WRITE descriptors (flags bit 1): those the driver
        // lends the device to fill. A chain outside RAM gets nothing.
        let mut written = 0;
        if let Ok(mut writer) = chain.writer(memory) {
            let mut random = vec![0; writer.available_bytes().min(MAX_BUFFER as usize)];
            source
                .read_exact(&mut random)
                .map_err(|e| format!("/dev/urandom: {e}"))?;
            if writer.write_all(&random).is_ok() {
                written = random.len();
            }
        }
        println!("[vmm] entropy thread: requestq, descriptor {head}: {written} random bytes");
        // The used length: how many bytes the device wrote, which the driver may use.
        queue
            .add_used(memory, head, written as u32)
            .map_err(|e| format!("the used ring: {e}"))?;
        served += 1;
    }
    Ok(served)
}

/// What the guest sees at each guest-physical address.
fn print_memory_map() {
    println!("[vmm] guest-physical memory:");
    let ranges = [
        (
            SLOT_0,
            "slot 0, RAM: GDT 0x1000, page tables 0x2000, IDT 0x5000",
        ),
        (CONSOLE, "no slot: the virtio console's registers"),
        (ENTROPY, "no slot: the entropy device's registers"),
        (HOLE, "no slot: nothing"),
        (SLOT_1, "slot 1, RAM: the virtqueues, the buffer to fill"),
    ];
    for ((start, len), what) in ranges {
        let end = start + len as u64 - 1;
        println!(
            "[vmm]   {start:#08x}-{end:#08x} {:>4} KiB  {what}",
            len / 1024
        );
    }
}

/// The register's name in the specification, for the log.
fn register_name(offset: u64) -> &'static str {
    match offset {
        MAGIC_VALUE => "MagicValue",
        VERSION => "Version",
        DEVICE_ID => "DeviceID",
        VENDOR_ID => "VendorID",
        DEVICE_FEATURES => "DeviceFeatures",
        DEVICE_FEATURES_SEL => "DeviceFeaturesSel",
        DRIVER_FEATURES => "DriverFeatures",
        DRIVER_FEATURES_SEL => "DriverFeaturesSel",
        QUEUE_SEL => "QueueSel",
        QUEUE_NUM_MAX => "QueueNumMax",
        QUEUE_NUM => "QueueNum",
        QUEUE_READY => "QueueReady",
        QUEUE_NOTIFY => "QueueNotify",
        INTERRUPT_STATUS => "InterruptStatus",
        INTERRUPT_ACK => "InterruptACK",
        STATUS => "Status",
        QUEUE_DESC_LOW => "QueueDescLow",
        QUEUE_DRIVER_LOW => "QueueDriverLow",
        QUEUE_DEVICE_LOW => "QueueDeviceLow",
        _ => "another register",
    }
}

/// KVM_RUN until the guest calls EXIT; returns its status and its number of exits. Each exit is
/// answered here, and the next KVM_RUN finishes the guest's instruction.
fn run_loop(vcpu: &mut VcpuFd, devices: &[&Device]) -> Result<(u8, u64), String> {
    let mut exits: u64 = 0;
    // The device whose page of registers holds `address`, if any.
    let device_at = |address: u64| devices.iter().find(|device| device.contains(address));
    loop {
        let exit = vcpu.run().map_err(|e| format!("KVM_RUN: {e}"))?;
        exits += 1;
        match exit {
            VcpuExit::IoOut(HYPERCALL_PORT, [HC_EXIT]) => {
                let regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
                let status = u8::try_from(regs.rbx)
                    .map_err(|_| format!("EXIT({}): a status is 0-255", regs.rbx))?;
                return Ok((status, exits));
            }
            // The devices' registers are 32 bits wide, and a driver must read and write them
            // whole: other accesses read 0 and are dropped.
            VcpuExit::MmioRead(address, data) if device_at(address).is_some() => {
                let device = device_at(address).unwrap();
                let offset = address - device.registers.0;
                let value = device
                    .transport
                    .lock()
                    .map_err(|_| "poisoned")?
                    .read(offset);
                match <&mut [u8; 4]>::try_from(&mut *data) {
                    Ok(word) => *word = value.to_le_bytes(),
                    Err(_) => data.fill(0),
                }
                let (device, name) = (device.name, register_name(offset));
                println!("[vmm] {device} MMIO read  {offset:#05x} {name:<17} -> {value:#x}");
            }
            VcpuExit::MmioWrite(address, data) if device_at(address).is_some() => {
                let device = device_at(address).unwrap();
                let offset = address - device.registers.0;
                let Ok(word) = <[u8; 4]>::try_from(data) else {
                    continue;
                };
                let value = u32::from_le_bytes(word);
                let name = register_name(offset);
                println!(
                    "[vmm] {} MMIO write {offset:#05x} {name:<17} <- {value:#x}",
                    device.name
                );
                let mut transport = device.transport.lock().map_err(|_| "poisoned")?;
                transport.write(offset, value);
                // A doorbell KVM did not catch (no ioeventfd, or not a 32-bit write of the
                // queue's index) still means "the queue has buffers": pass it on the same way.
                if offset == QUEUE_NOTIFY && value == device.queue as u32 {
                    let _ = device.doorbell.write(1);
                }
            }
            // No device behind these ports and addresses: reads see all ones (as on a PC's
            // empty bus), and writes are dropped.
            VcpuExit::IoIn(_, data) => data.fill(0xff),
            VcpuExit::IoOut(..) => {}
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

/// Writes the IDT's two gates: each handler's address, cut in three, and the code selector.
fn write_idt(memory: &GuestMemoryMmap) -> Result<(), String> {
    for (vector, handler) in [
        (CONSOLE_VECTOR, CONSOLE_HANDLER),
        (ENTROPY_VECTOR, ENTROPY_HANDLER),
    ] {
        let low = (handler & 0xffff)
            | (u64::from(CODE_SELECTOR) << 16)
            | (INTERRUPT_GATE << 40)
            | (((handler >> 16) & 0xffff) << 48);
        let high = handler >> 32;
        let gate = IDT_ADDRESS + vector * 16;
        memory
            .write_obj(low, GuestAddress(gate))
            .and_then(|()| memory.write_obj(high, GuestAddress(gate + 8)))
            .map_err(|e| format!("cannot write the IDT: {e}"))?;
    }
    Ok(())
}

/// Writes the page tables: PML4[0] -> the PDPT; PDPT[0] -> the page directory, whose entry 0
/// maps the 2 MiB page at guest-physical 0 to virtual 0. Every other virtual address is
/// unmapped. The devices' registers are in that page: a driver would map them uncached, but
/// KVM catches an access where no slot is whatever the page tables say.
fn write_page_tables(memory: &GuestMemoryMmap) -> Result<(), String> {
    let entries = [
        (PML4_ADDRESS, PDPT_ADDRESS | WRITABLE | PRESENT), // PML4[0]: virtual 0-512 GiB
        (PDPT_ADDRESS, PD_ADDRESS | WRITABLE | PRESENT),   // PDPT[0]: virtual 0-1 GiB
        (PD_ADDRESS, PAGE_SIZE_2M | WRITABLE | PRESENT),   // PD[0]: the 2 MiB page at 0
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
    sregs.idt.base = IDT_ADDRESS;
    sregs.idt.limit = ((ENTROPY_VECTOR + 1) * 16 - 1) as u16; // gates 0 to 0x26
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
    regs.rflags = 0x2; // bit 1 is always set; IF = 0 until the guest's `sti`
    vcpu.set_regs(&regs)
        .map_err(|e| format!("KVM_SET_REGS: {e}"))?;

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
