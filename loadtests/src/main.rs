#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

fn main() {
    println!("loadtests: not built yet");
}
