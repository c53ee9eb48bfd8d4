//go:build ignore

// Input to cgo -godefs; see gen.go. Run `go generate ./preload/abi`.

package abi

/*
#include "../include/fsstack_abi.h"
*/
import "C"

// ABI version and magics.
const (
	ABIVersion         = C.FSS_ABI_VERSION
	CacheLine          = C.FSS_CACHELINE
	HelloMinSize       = C.FSS_HELLO_MIN_SIZE
	HelloMaxSize       = C.FSS_HELLO_MAX_SIZE
	HelloForkChild     = C.FSS_HELLO_FORK_CHILD
	HelloWakeAck       = C.FSS_HELLO_WAKE_ACK
	HelloHandover      = C.FSS_HELLO_HANDOVER
	HelloTxNospace     = C.FSS_HELLO_TX_NOSPACE
	HelloAcceptRing    = C.FSS_HELLO_ACCEPT_RING
	AcceptRecSize      = C.FSS_ACCEPT_REC_SIZE
	AcceptRingMax      = C.FSS_ACCEPT_RING_MAX
	AcceptStolen       = C.FSS_ACCEPT_STOLEN
	AcceptStealMS      = C.FSS_ACCEPT_STEAL_MS
	HandoverErrno      = C.FSS_HANDOVER_ERRNO
	CmplListenLoopback = C.FSS_CMPL_LISTEN_LOOPBACK
	AttachNFDs         = C.FSS_ATTACH_NFDS
	FDSegment          = C.FSS_FD_SEGMENT
	FDDoorbell         = C.FSS_FD_DOORBELL
	FDWake             = C.FSS_FD_WAKE

	DefaultReqEntries  = C.FSS_DEFAULT_REQ_ENTRIES
	DefaultCmplEntries = C.FSS_DEFAULT_CMPL_ENTRIES
	DefaultSocks       = C.FSS_DEFAULT_SOCKS
	DefaultRxFIFO      = C.FSS_DEFAULT_RX_FIFO
	DefaultTxFIFO      = C.FSS_DEFAULT_TX_FIFO
	MaxSocks           = C.FSS_MAX_SOCKS

	DSleepReq  = C.FSS_DSLEEP_REQ
	DSleepCmpl = C.FSS_DSLEEP_CMPL

	FsockSet         = C.FSS_FSOCK_SET
	FsockListenSpawn = C.FSS_FSOCK_LISTEN_SPAWN

	DaemonRunning = C.FSS_DAEMON_RUNNING
	DaemonGone    = C.FSS_DAEMON_GONE

	OpNop         = C.FSS_OP_NOP
	OpSocket      = C.FSS_OP_SOCKET
	OpBind        = C.FSS_OP_BIND
	OpListen      = C.FSS_OP_LISTEN
	OpAccept      = C.FSS_OP_ACCEPT
	OpConnect     = C.FSS_OP_CONNECT
	OpShutdown    = C.FSS_OP_SHUTDOWN
	OpClose       = C.FSS_OP_CLOSE
	OpGetsockname = C.FSS_OP_GETSOCKNAME
	OpGetpeername = C.FSS_OP_GETPEERNAME
	OpSetsockopt  = C.FSS_OP_SETSOCKOPT
	OpGetsockopt  = C.FSS_OP_GETSOCKOPT
	OpDup         = C.FSS_OP_DUP
	OpForkPrepare = C.FSS_OP_FORK_PREPARE
	OpForkInherit = C.FSS_OP_FORK_INHERIT
	OpForkCommit  = C.FSS_OP_FORK_COMMIT
	OpMax         = C.FSS_OP_MAX

	ReqNonblock = C.FSS_REQ_NONBLOCK
	ReqCPU      = C.FSS_REQ_CPU
	OptMax      = C.FSS_OPT_MAX

	StFree       = C.FSS_ST_FREE
	StOpen       = C.FSS_ST_OPEN
	StListening  = C.FSS_ST_LISTENING
	StConnecting = C.FSS_ST_CONNECTING
	StConnected  = C.FSS_ST_CONNECTED
	StClosed     = C.FSS_ST_CLOSED

	EvConnected = C.FSS_EV_CONNECTED
	EvRdEOF     = C.FSS_EV_RDEOF
	EvWrEOF     = C.FSS_EV_WREOF
	EvHup       = C.FSS_EV_HUP
	EvErr       = C.FSS_EV_ERR
	EvListening = C.FSS_EV_LISTENING

	EvStateShift = C.FSS_EV_STATE_SHIFT
	EvStateMask  = C.FSS_EV_STATE_MASK

	DFTxWait = C.FSS_DF_TX_WAIT
	DFRxWait = C.FSS_DF_RX_WAIT

	SFTxNospace = C.FSS_SF_TX_NOSPACE

	PollIn    = C.FSS_POLLIN
	PollOut   = C.FSS_POLLOUT
	PollErr   = C.FSS_POLLERR
	PollHup   = C.FSS_POLLHUP
	PollRdHup = C.FSS_POLLRDHUP
)

type (
	Hello      C.struct_fss_hello
	HelloReply C.struct_fss_hello_reply
	SegHdr     C.struct_fss_seg_hdr
	Ring       C.struct_fss_ring
	Sockaddr   C.struct_fss_sockaddr
	AcceptRec  C.struct_fss_accept_rec
	Req        C.struct_fss_req
	Cmpl       C.struct_fss_cmpl
	Sock       C.struct_fss_sock
)

const (
	SizeofHello      = C.sizeof_struct_fss_hello
	SizeofHelloReply = C.sizeof_struct_fss_hello_reply
	SizeofSegHdr     = C.sizeof_struct_fss_seg_hdr
	SizeofRing       = C.sizeof_struct_fss_ring
	SizeofSockaddr   = C.sizeof_struct_fss_sockaddr
	SizeofAcceptRec  = C.sizeof_struct_fss_accept_rec
	SizeofReq        = C.sizeof_struct_fss_req
	SizeofCmpl       = C.sizeof_struct_fss_cmpl
	SizeofSock       = C.sizeof_struct_fss_sock
)
