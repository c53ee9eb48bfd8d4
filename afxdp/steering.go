package afxdp

// The steering XDP program, built in Go with cilium/ebpf's asm (no clang).
//
//	frame --> Ethernet: EtherType IPv6? ---------------- yes --> IPv6 below
//	          EtherType IPv4? --------------------------- no --> PASS
//	            | truncated ------------------------------------> PASS (malformed)
//	          IPv4: version 4, IHL >= 5, header present? -- no --> PASS (malformed)
//	          fragment (MF or offset)? ------------------- yes --> PASS
//	          protocol ICMP? ----------------------------- yes --> ICMP below
//	          protocol TCP? ------------------------------ no --> PASS
//	          TCP header present? ------------------------ no --> PASS (malformed)
//	          (addr, port) = (daddr, dport)
//	   owned: addr in addrs? ----------------------------- no --> PASS
//	          port in [cfg.first, cfg.last], or {addr, port} or
//	          {0, port} in ports? ------------------------ no --> PASS
//	          a SYN without ACK while the queue's free rx frames are
//	          below shed[rx_queue_index].low? --------------- yes --> DROP (shed)
//	          bpf_redirect_map(xsks, rx_queue_index, XDP_PASS)
//	              REDIRECT (redirected) or PASS (no socket on that queue)
//
//	   ICMP: type 3 code 4 (fragmentation needed), its quoted IPv4 header
//	          (version 4, IHL >= 5, TCP, fragment offset 0) and the quoted
//	          TCP ports present? ------------------------- no --> PASS
//	          (addr, port) = (quoted saddr, quoted sport): fsstack's side
//	          of the flow whose segment was too big --> owned
//
//	   IPv6: fixed header present, version 6? ------------ no --> PASS (malformed)
//	          next header ICMPv6? ------------------------ yes --> ICMPv6 below
//	          next header TCP? --------------------------- no --> PASS
//	          (extension headers)
//	          TCP header present? ------------------------ no --> PASS (malformed)
//	          (addr, port) = (daddr, dport)
//	   owned: addr in addrs6? ---------------------------- no --> PASS
//	          port in [cfg.first, cfg.last], or {addr, port} or
//	          {::, port} in ports6? ---------------------- no --> PASS
//	          redirect as above
//
//	 ICMPv6: type 2 code 0 (packet too big), its quoted IPv6 header
//	          (next header TCP) and the quoted TCP ports present? -- no --> PASS
//	          (addr, port) = (quoted saddr, quoted sport) --> owned (IPv6)
//
// So path-MTU discovery works for fsstack's own flows of both families:
// the error reaches the shard's netstack, which lowers the flow's MSS.
// Every other ICMP and ICMPv6 message stays with the kernel, which keeps
// answering neighbour discovery (NS/NA, RA) itself.
//
// Maps (all keys and values are plain bytes; addresses and ports in
// network byte order unless noted):
//
//	xsks   XSKMAP     u32 queue -> AF_XDP socket fd         (Queues entries)
//	addrs  HASH       [4]byte IPv4 -> u8 (1)                 (owned addresses)
//	ports  HASH       {[4]byte addr, [2]byte port, u16 0} -> u8 (1); addr 0 = any owned address
//	addrs6 HASH       [16]byte IPv6 -> u8 (1)                (owned IPv6 addresses)
//	ports6 HASH       {[16]byte addr, [2]byte port, u16 0} -> u8 (1); addr :: = any owned IPv6 address
//	cfg    ARRAY      0 -> {u32 first, u32 last} ephemeral range, host order; first 0 = none
//	stats  PERCPU_ARRAY  statRedirected.. -> u64 counters
//	shed   ARRAY      u32 queue -> shedValue                (Queues entries; mmapable)
//
// Shedding: the kernel places a frame for an AF_XDP socket only into a
// free frame from its fill ring and drops it when there is none, whatever
// it carries. A shard that falls behind (a SYN flood on a busy machine)
// would lose the final ACKs of handshakes answered with SYN cookies among
// the flood's SYNs: the server then has no trace of a connection its
// client believes open. So each queue's shard publishes, after every
// receive pass, how many free frames its fill ring holds (avail) and how
// many frames the program had steered to the queue then (mark); the
// program counts every frame it steers (taken), so avail + mark - taken
// is what the kernel has left now, without waiting for the shard to run.
// A SYN without ACK that finds fewer than low left is dropped and counted:
// the last low frames are kept for the segments of connections open or
// completing their handshake. Counting a frame the kernel then drops
// makes the estimate low until the shard's next pass (it errs towards
// shedding). low 0: the queue never sheds.

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// AttachMode says how the steering program is attached to a device.
type AttachMode int

const (
	// AttachAuto tries native (driver) mode, then generic (skb) mode.
	AttachAuto AttachMode = iota
	// AttachNative attaches in the driver (XDP_FLAGS_DRV_MODE).
	AttachNative
	// AttachGeneric attaches in the generic skb path (XDP_FLAGS_SKB_MODE).
	AttachGeneric
)

func (m AttachMode) String() string {
	switch m {
	case AttachAuto:
		return "auto"
	case AttachNative:
		return "native"
	case AttachGeneric:
		return "generic"
	}
	return fmt.Sprintf("AttachMode(%d)", int(m))
}

// SteeringOptions configures LoadSteering.
type SteeringOptions struct {
	// Queues is the number of XSKMAP entries: queues 0..Queues-1 can get
	// a socket. Must be at least 1.
	Queues int
	// MaxAddrs and MaxPorts size the addrs and ports maps. If 0, 64 and
	// 16384.
	MaxAddrs, MaxPorts int
}

// SteeringStats are the program's counters, summed over CPUs.
type SteeringStats struct {
	Redirected uint64 // frames sent to an AF_XDP socket
	Passed     uint64 // frames not for fsstack, given to the kernel
	Malformed  uint64 // truncated or bad IPv4/IPv6 headers, given to the kernel
	NoSocket   uint64 // fsstack's frames that found no socket on their queue (given to the kernel)
	Shed       uint64 // SYNs dropped while their queue's shard shed them (all queues)
}

// SteeringTables is what the steering maps hold, read back from the kernel
// (for diagnostics: "why is this port not steered?").
type SteeringTables struct {
	Addrs []netip.Addr     // owned addresses, sorted
	Ports []netip.AddrPort // owned ports, sorted; address 0.0.0.0 (::) = every owned IPv4 (IPv6) address
	// EphemeralFirst and EphemeralLast are the ephemeral range; 0, 0 if
	// none is set.
	EphemeralFirst, EphemeralLast uint16
}

// Counter indices in the stats map.
const (
	statRedirected = iota
	statPassed
	statMalformed
	statNoSocket
	numStats
)

// XDP return codes (uapi/linux/bpf.h).
const (
	xdpDrop     = 1
	xdpPass     = 2
	xdpRedirect = 4
)

// portKey is the key of the ports map.
type portKey struct {
	Addr [4]byte // network order; zero = any owned address
	Port [2]byte // network order
	Pad  uint16  // always 0
}

// portKey6 is the key of the ports6 map.
type portKey6 struct {
	Addr [16]byte // zero = any owned IPv6 address
	Port [2]byte  // network order
	Pad  uint16   // always 0
}

// shedValue is the value of shed[queue]: a cache line the program writes
// for every frame, and one the shard writes once a pass.
type shedValue struct {
	Taken uint64 // frames steered to the queue (the program adds atomically)
	Shed  uint64 // SYNs dropped (the program adds atomically)
	_     [48]byte
	Low   uint64 // shed SYNs when fewer frames than this are left; 0: never
	Avail uint64 // free frames on the fill ring at the shard's last pass
	Mark  uint64 // Taken when the shard looked
	_     [40]byte
}

// shedValueSize is the size of shedValue and the stride of the shed map's
// memory mapping.
const shedValueSize = 128

// Offsets of shedValue's fields, for the program.
const (
	shedTaken = 0
	shedShed  = 8
	shedLow   = 64
	shedAvail = 72
	shedMark  = 80
)

// bpfFMmapable is BPF_F_MMAPABLE (uapi/linux/bpf.h): the array can be
// memory-mapped, so a shard publishes its fill level with two stores.
const bpfFMmapable = 1 << 10

// rangeValue is the value of cfg[0].
type rangeValue struct {
	First, Last uint32 // host order, inclusive; First 0 = no range
}

// Offsets in the frame and in struct xdp_md.
const (
	ethLen       = 14
	ipMinLen     = 20
	ip6HdrLen    = 40
	tcpMinLen    = 20
	tcpFlagsOff  = 13
	tcpFlagSyn   = 0x02
	tcpFlagAck   = 0x10
	xdpMdData    = 0
	xdpMdDataEnd = 4
	xdpMdRxQueue = 16
	protoTCP     = 6
	protoICMP    = 1

	icmpHdrLen        = 8
	icmpDestUnreach   = 3
	icmpFragNeeded    = 4
	protoICMPv6       = 58
	icmp6PacketTooBig = 2
)

// steeringSpec returns the program and map specs. It is plain data and
// needs no kernel.
func steeringSpec(opts SteeringOptions) (*ebpf.CollectionSpec, error) {
	if opts.Queues < 1 || opts.Queues > 1<<16 {
		return nil, fmt.Errorf("afxdp: steering queues %d: want 1..65536", opts.Queues)
	}
	if opts.MaxAddrs == 0 {
		opts.MaxAddrs = 64
	}
	if opts.MaxPorts == 0 {
		opts.MaxPorts = 16384
	}
	maps := map[string]*ebpf.MapSpec{
		"xsks":   {Name: "fs_xsks", Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: uint32(opts.Queues)},
		"addrs":  {Name: "fs_addrs", Type: ebpf.Hash, KeySize: 4, ValueSize: 1, MaxEntries: uint32(opts.MaxAddrs)},
		"ports":  {Name: "fs_ports", Type: ebpf.Hash, KeySize: 8, ValueSize: 1, MaxEntries: uint32(opts.MaxPorts)},
		"addrs6": {Name: "fs_addrs6", Type: ebpf.Hash, KeySize: 16, ValueSize: 1, MaxEntries: uint32(opts.MaxAddrs)},
		"ports6": {Name: "fs_ports6", Type: ebpf.Hash, KeySize: 20, ValueSize: 1, MaxEntries: uint32(opts.MaxPorts)},
		"cfg":    {Name: "fs_cfg", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1},
		"stats":  {Name: "fs_stats", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: numStats},
		"shed":   {Name: "fs_shed", Type: ebpf.Array, KeySize: 4, ValueSize: shedValueSize, MaxEntries: uint32(opts.Queues), Flags: bpfFMmapable},
	}
	return &ebpf.CollectionSpec{
		Maps: maps,
		Programs: map[string]*ebpf.ProgramSpec{
			"steer": {
				Name:         "fs_steer",
				Type:         ebpf.XDP,
				License:      "Dual MIT/GPL",
				Instructions: steeringProgram(),
			},
		},
	}, nil
}

// be16 returns the value a native-endian 16-bit load of the big-endian
// bytes of v yields.
func be16(v uint16) int32 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return int32(binary.NativeEndian.Uint16(b[:]))
}

// steeringProgram returns the instructions. Registers:
//
//	r6 ctx (struct xdp_md *)  r7 port (network order)  r8 addr (network order):
//	the local side of the flow (daddr, dport; for an ICMP error the quoted
//	saddr, sport)
//	r2/r3 data/data_end while parsing; r1-r5 are clobbered by helper calls.
//
// Stack: fp-4 u32 key (addrs, cfg); fp-16..fp-9 ports key; fp-20 stats key;
// fp-40..fp-25 addrs6 key (the IPv6 daddr); fp-64..fp-45 ports6 key;
// fp-68 u32 1 if the frame is a TCP SYN without ACK, else 0; fp-72 shed
// key (the rx queue).
// Every key byte is written before its lookup (the verifier insists).
func steeringProgram() asm.Instructions {
	const (
		R0, R1, R2, R3, R4, R5 = asm.R0, asm.R1, asm.R2, asm.R3, asm.R4, asm.R5
		R6, R7, R8, R9, FP     = asm.R6, asm.R7, asm.R8, asm.R9, asm.RFP
	)
	lookup := func(mapName string, keyOff int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMapPtr(R1, 0).WithReference(mapName),
			asm.Mov.Reg(R2, FP),
			asm.Add.Imm(R2, int32(keyOff)),
			asm.FnMapLookupElem.Call(),
		}
	}
	// count emits a block, entered at label, that increments stats[idx]
	// and returns the value ret loads into r0.
	count := func(label string, idx int32, ret func() asm.Instruction) asm.Instructions {
		ins := asm.Instructions{asm.StoreImm(FP, -20, int64(idx), asm.Word).WithSymbol(label)}
		ins = append(ins, lookup("stats", -20)...)
		ins = append(ins,
			asm.JEq.Imm(R0, 0, label+"_out"),
			asm.LoadMem(R1, R0, 0, asm.DWord),
			asm.Add.Imm(R1, 1),
			asm.StoreMem(R0, 0, R1, asm.DWord),
			ret().WithSymbol(label+"_out"),
			asm.Return(),
		)
		return ins
	}
	// ephemeral emits the ephemeral-range check of port r7 (network
	// order): in range jumps to redirect, else to notIn.
	ephemeral := func(notIn string) asm.Instructions {
		ins := asm.Instructions{asm.StoreImm(FP, -4, 0, asm.Word)}
		ins = append(ins, lookup("cfg", -4)...)
		return append(ins,
			asm.JEq.Imm(R0, 0, notIn),
			asm.Mov.Reg(R9, R7),
			asm.HostTo(asm.BE, R9, asm.Half),
			asm.LoadMem(R1, R0, 0, asm.Word),
			asm.LoadMem(R2, R0, 4, asm.Word),
			asm.JEq.Imm(R1, 0, notIn),
			asm.JLT.Reg(R9, R1, notIn),
			asm.JGT.Reg(R9, R2, notIn),
			asm.Ja.Label("redirect"),
		)
	}
	passRet := func() asm.Instruction { return asm.Mov.Imm(R0, xdpPass) }
	r7Ret := func() asm.Instruction { return asm.Mov.Reg(R0, R7) }

	var p asm.Instructions
	add := func(ins ...asm.Instruction) { p = append(p, ins...) }
	addAll := func(ins asm.Instructions) { p = append(p, ins...) }

	add(
		asm.Mov.Reg(R6, R1),
		asm.StoreImm(FP, -68, 0, asm.Word),
		asm.LoadMem(R2, R6, xdpMdData, asm.Word),
		asm.LoadMem(R3, R6, xdpMdDataEnd, asm.Word),

		// Ethernet.
		asm.Mov.Reg(R4, R2),
		asm.Add.Imm(R4, ethLen),
		asm.JGT.Reg(R4, R3, "malformed"),
		asm.LoadMem(R5, R2, 12, asm.Half),
		asm.JEq.Imm(R5, be16(0x86dd), "ipv6"),
		asm.JNE.Imm(R5, be16(0x0800), "pass"),

		// IPv4: fixed header present, version 4, IHL >= 5.
		asm.Mov.Reg(R4, R2),
		asm.Add.Imm(R4, ethLen+ipMinLen),
		asm.JGT.Reg(R4, R3, "malformed"),
		asm.LoadMem(R5, R2, ethLen, asm.Byte),
		asm.Mov.Reg(R4, R5),
		asm.RSh.Imm(R4, 4),
		asm.JNE.Imm(R4, 4, "malformed"),
		asm.And.Imm(R5, 0x0f),
		asm.JLT.Imm(R5, 5, "malformed"),
		// Fragments (MF set or offset != 0) go to the kernel.
		asm.LoadMem(R4, R2, ethLen+6, asm.Half),
		asm.And.Imm(R4, be16(0x3fff)),
		asm.JNE.Imm(R4, 0, "pass"),
		asm.LoadMem(R4, R2, ethLen+9, asm.Byte),
		asm.JNE.Imm(R4, protoICMP, "tcp"),

		// ICMP: r2 = data + IHL*4, bounded 20..60; the ICMP header and
		// the quoted IPv4 header present?
		asm.LSh.Imm(R5, 2),
		asm.Add.Reg(R2, R5),
		asm.Mov.Reg(R4, R2),
		asm.Add.Imm(R4, ethLen+icmpHdrLen+ipMinLen),
		asm.JGT.Reg(R4, R3, "pass"),
		asm.LoadMem(R4, R2, ethLen, asm.Half), // type, code
		asm.JNE.Imm(R4, be16(icmpDestUnreach<<8|icmpFragNeeded), "pass"),
		asm.LoadMem(R5, R2, ethLen+icmpHdrLen, asm.Byte),
		asm.Mov.Reg(R4, R5),
		asm.RSh.Imm(R4, 4),
		asm.JNE.Imm(R4, 4, "pass"),
		asm.And.Imm(R5, 0x0f),
		asm.JLT.Imm(R5, 5, "pass"),
		asm.LoadMem(R4, R2, ethLen+icmpHdrLen+9, asm.Byte),
		asm.JNE.Imm(R4, protoTCP, "pass"),
		asm.LoadMem(R4, R2, ethLen+icmpHdrLen+6, asm.Half),
		asm.And.Imm(R4, be16(0x1fff)),
		asm.JNE.Imm(R4, 0, "pass"),
		asm.LoadMem(R8, R2, ethLen+icmpHdrLen+12, asm.Word), // quoted saddr
		// The quoted TCP ports: r2 += quoted IHL*4, bounded 20..60.
		asm.LSh.Imm(R5, 2),
		asm.Add.Reg(R2, R5),
		asm.Mov.Reg(R4, R2),
		asm.Add.Imm(R4, ethLen+icmpHdrLen+4),
		asm.JGT.Reg(R4, R3, "pass"),
		asm.LoadMem(R7, R2, ethLen+icmpHdrLen, asm.Half), // quoted sport
		asm.Ja.Label("owned"),

		asm.JNE.Imm(R4, protoTCP, "pass").WithSymbol("tcp"),
		asm.LoadMem(R8, R2, ethLen+16, asm.Word), // daddr

		// TCP header (IHL-aware): r2 = data + IHL*4, bounded 20..60.
		asm.LSh.Imm(R5, 2),
		asm.Add.Reg(R2, R5),
		asm.Mov.Reg(R4, R2),
		asm.Add.Imm(R4, ethLen+tcpMinLen),
		asm.JGT.Reg(R4, R3, "malformed"),
		asm.LoadMem(R7, R2, ethLen+2, asm.Half), // dport
		asm.LoadMem(R4, R2, ethLen+tcpFlagsOff, asm.Byte),
		asm.And.Imm(R4, tcpFlagSyn|tcpFlagAck),
		asm.JNE.Imm(R4, tcpFlagSyn, "owned"),
		asm.StoreImm(FP, -68, 1, asm.Word),

		// addr owned?
		asm.StoreMem(FP, -4, R8, asm.Word).WithSymbol("owned"),
	)
	addAll(lookup("addrs", -4))
	add(
		asm.JEq.Imm(R0, 0, "pass"),
	)
	// Ephemeral range (host order).
	addAll(ephemeral("ports"))
	add(

		// {addr, port}, then {0, port}.
		asm.StoreMem(FP, -16, R8, asm.Word).WithSymbol("ports"),
		asm.StoreMem(FP, -12, R7, asm.Half),
		asm.StoreImm(FP, -10, 0, asm.Half),
	)
	addAll(lookup("ports", -16))
	add(
		asm.JNE.Imm(R0, 0, "redirect"),
		asm.StoreImm(FP, -16, 0, asm.Word),
	)
	addAll(lookup("ports", -16))
	add(
		asm.JEq.Imm(R0, 0, "pass"),

		// Ours. Count it for the queue; a SYN without ACK is dropped while
		// fewer than low free frames are left (avail + mark - taken).
		asm.LoadMem(R2, R6, xdpMdRxQueue, asm.Word).WithSymbol("redirect"),
		asm.StoreMem(FP, -72, R2, asm.Word),
	)
	addAll(lookup("shed", -72))
	add(
		asm.JEq.Imm(R0, 0, "deliver"),
		asm.LoadMem(R1, FP, -68, asm.Word),
		asm.JEq.Imm(R1, 0, "taken"),
		asm.LoadMem(R4, R0, shedLow, asm.DWord),
		asm.JEq.Imm(R4, 0, "taken"),
		asm.LoadMem(R1, R0, shedAvail, asm.DWord),
		asm.LoadMem(R2, R0, shedMark, asm.DWord),
		asm.Add.Reg(R1, R2),
		asm.LoadMem(R3, R0, shedTaken, asm.DWord),
		asm.Sub.Reg(R1, R3),
		asm.JSGE.Reg(R1, R4, "taken"),
		asm.Mov.Imm(R1, 1),
		asm.AddAtomic.Mem(R0, R1, asm.DWord, shedShed),
		asm.Mov.Imm(R0, xdpDrop),
		asm.Return(),
		asm.Mov.Imm(R1, 1).WithSymbol("taken"),
		asm.AddAtomic.Mem(R0, R1, asm.DWord, shedTaken),

		// To the socket of the receiving queue, else the kernel.
		asm.LoadMem(R2, R6, xdpMdRxQueue, asm.Word).WithSymbol("deliver"),
		asm.LoadMapPtr(R1, 0).WithReference("xsks"),
		asm.Mov.Imm(R3, xdpPass),
		asm.FnRedirectMap.Call(),
		asm.Mov.Reg(R7, R0),
		asm.JNE.Imm(R7, xdpRedirect, "nosocket"),
	)
	addAll(count("redirected", statRedirected, r7Ret))
	addAll(count("nosocket", statNoSocket, r7Ret))
	addAll(count("pass", statPassed, passRet))
	addAll(count("malformed", statMalformed, passRet))
	// IPv6: the fixed header, version 6, next header TCP (an extension
	// header or ICMPv6 goes to the kernel), the TCP header.
	add(
		asm.Mov.Reg(R4, R2).WithSymbol("ipv6"),
		asm.Add.Imm(R4, ethLen+ip6HdrLen),
		asm.JGT.Reg(R4, R3, "malformed"),
		asm.LoadMem(R5, R2, ethLen, asm.Byte),
		asm.RSh.Imm(R5, 4),
		asm.JNE.Imm(R5, 6, "malformed"),
		asm.LoadMem(R4, R2, ethLen+6, asm.Byte),
		asm.JEq.Imm(R4, protoICMPv6, "icmp6"),
		asm.JNE.Imm(R4, protoTCP, "pass"),
		asm.Mov.Reg(R4, R2),
		asm.Add.Imm(R4, ethLen+ip6HdrLen+tcpMinLen),
		asm.JGT.Reg(R4, R3, "malformed"),
		asm.LoadMem(R7, R2, ethLen+ip6HdrLen+2, asm.Half), // dport
		asm.LoadMem(R1, R2, ethLen+24, asm.DWord),         // daddr
		asm.StoreMem(FP, -40, R1, asm.DWord),
		asm.LoadMem(R1, R2, ethLen+32, asm.DWord),
		asm.StoreMem(FP, -32, R1, asm.DWord),
		asm.LoadMem(R4, R2, ethLen+ip6HdrLen+tcpFlagsOff, asm.Byte),
		asm.And.Imm(R4, tcpFlagSyn|tcpFlagAck),
		asm.JNE.Imm(R4, tcpFlagSyn, "owned6"),
		asm.StoreImm(FP, -68, 1, asm.Word),
		asm.Ja.Label("owned6"),

		// ICMPv6: a packet-too-big (type 2 code 0) with the quoted IPv6
		// header and the quoted TCP ports present, quoting TCP: (addr,
		// port) = (quoted saddr, quoted sport), fsstack's side of the flow.
		asm.Mov.Reg(R4, R2).WithSymbol("icmp6"),
		asm.Add.Imm(R4, ethLen+ip6HdrLen+icmpHdrLen+ip6HdrLen+4),
		asm.JGT.Reg(R4, R3, "pass"),
		asm.LoadMem(R4, R2, ethLen+ip6HdrLen, asm.Half), // type, code
		asm.JNE.Imm(R4, be16(icmp6PacketTooBig<<8), "pass"),
		asm.LoadMem(R4, R2, ethLen+ip6HdrLen+icmpHdrLen+6, asm.Byte),
		asm.JNE.Imm(R4, protoTCP, "pass"),
		asm.LoadMem(R7, R2, ethLen+ip6HdrLen+icmpHdrLen+ip6HdrLen, asm.Half), // quoted sport
		asm.LoadMem(R1, R2, ethLen+ip6HdrLen+icmpHdrLen+8, asm.DWord),        // quoted saddr
		asm.StoreMem(FP, -40, R1, asm.DWord),
		asm.LoadMem(R1, R2, ethLen+ip6HdrLen+icmpHdrLen+16, asm.DWord),
		asm.StoreMem(FP, -32, R1, asm.DWord),
	)
	owned6 := lookup("addrs6", -40)
	owned6[0] = owned6[0].WithSymbol("owned6")
	addAll(owned6)
	add(asm.JEq.Imm(R0, 0, "pass"))
	addAll(ephemeral("ports6"))
	add(
		// {addr, port}, then {::, port}.
		asm.LoadMem(R1, FP, -40, asm.DWord).WithSymbol("ports6"),
		asm.StoreMem(FP, -64, R1, asm.DWord),
		asm.LoadMem(R1, FP, -32, asm.DWord),
		asm.StoreMem(FP, -56, R1, asm.DWord),
		asm.StoreMem(FP, -48, R7, asm.Half),
		asm.StoreImm(FP, -46, 0, asm.Half),
	)
	addAll(lookup("ports6", -64))
	add(
		asm.JNE.Imm(R0, 0, "redirect"),
		asm.Mov.Imm(R1, 0),
		asm.StoreMem(FP, -64, R1, asm.DWord),
		asm.StoreMem(FP, -56, R1, asm.DWord),
	)
	addAll(lookup("ports6", -64))
	add(
		asm.JEq.Imm(R0, 0, "pass"),
		asm.Ja.Label("redirect"),
	)
	return p
}
