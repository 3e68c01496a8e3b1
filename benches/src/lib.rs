//! Measurements of ringcast: criterion benchmarks of the ring (`benches/`), and the
//! `ringcast-loadgen` load client for servers.
