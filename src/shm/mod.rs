//! Shared memory beside the database file: the mapped files, futex waits on them, the store's
//! change signal, and the fixed-size record tables the guards and metrics keep in them.
//!
//! Every process that opens a store maps the same small files next to the database. Words in
//! them are updated only with atomic operations, so a process killed at any instruction leaves
//! them consistent, and waiting on a word is a futex (Linux) on a shared file mapping: the kernel
//! keys it by inode and offset, so a wake in one process reaches sleepers in every other, with no
//! polling and no CPU while idle.
//!
//! Crate-private on purpose: a mapping of a file that another process truncates faults
//! (SIGBUS) on the next access, so only code that owns the file's layout and never shrinks it
//! may map one. The public types built on these (the guards, [`Metrics`](crate::Metrics), the
//! store) are the way in.
//!
//! | module | job |
//! | --- | --- |
//! | [`region`] | map a file beside the database, with its disk blocks reserved |
//! | [`futex`] | sleep on a shared word and wake its sleepers in every process |
//! | [`signal`] | the store's cross-process wake-up: a commit counter and its futex |
//! | [`table`] | blocks of shared words, and the open-addressing record table with its one claiming loop |

pub(crate) mod futex;
pub(crate) mod region;
pub(crate) mod signal;
pub(crate) mod table;

pub(crate) use futex::{futex_wait_bits, futex_wake_bits};
pub(crate) use region::{SharedRegion, sidecar};
pub(crate) use signal::ChangeSignal;
