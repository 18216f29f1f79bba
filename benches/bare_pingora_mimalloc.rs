//! The bare Pingora passthrough of `bare_pingora.rs` on the mimalloc allocator, so a router build
//! on mimalloc (`--extra-router`) can be compared with Pingora on the same allocator.
//! Same arguments as `bare_pingora`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[allow(dead_code)]
#[path = "bare_pingora.rs"]
mod bare;

fn main() {
    bare::run()
}
