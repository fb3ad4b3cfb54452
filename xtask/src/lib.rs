//! xtask library: the namespace lab.
