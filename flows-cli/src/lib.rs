//! The library half of the `flows` command line: the operations it performs on runs
//! ([`ops`]), for the dashboard and for programs of your own.

pub mod ops;
