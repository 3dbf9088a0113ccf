//! `fwtool` command line. See `fwtool help`.

use std::path::Path;
use std::process::ExitCode;

use fwtool::rom::RomFile;
use fwtool::smmcheck::{SmmCheckOptions, DEFAULT_MAX_FRAME};
use fwtool::{parse_number, rmod, rom, smmcheck};

const USAGE: &str = "\
usage:
  fwtool rmod <in.elf> <out.rmod> --entry <SYMBOL> --params <SYMBOL>
      Convert an x86-64 ELF executable linked at address 0 with `ld -q`
      (--emit-relocs) into a relocatable module (HRMD format).
  fwtool mkrom --boot <boot.bin> --size <BYTES> --out <rom> [--file NAME=PATH]...
      Assemble a ROM image of exactly BYTES (decimal or 0x hex, a multiple of
      64 KiB): file directory (HRFS) at offset 0, boot.bin at the very end.
  fwtool check-smm <elf> [--allow-symbol-prefix PREFIX]... [--max-frame BYTES]
      Check an SMM object (.o, ld -r output or executable): no x87/MMX/SSE/AVX
      instructions, no panic/fmt/unwind/float symbols, only allowed undefined
      symbols, only rmodtool relocation types, stack frames <= BYTES
      (default 1024). Exits 1 if a check fails.
  fwtool rmod-info <file.rmod>
      Print the header of an rmod.
  fwtool rom-ls <rom>
      List the file directory of a ROM image.
  fwtool help

Options take their value as the next argument or after '='.
Exit status: 0 success, 1 failure (or failed check), 2 bad usage.";

enum CliError {
    Usage(String),
    Failed(String),
}

type CliResult<T> = Result<T, CliError>;

fn usage<T>(msg: impl Into<String>) -> CliResult<T> {
    Err(CliError::Usage(msg.into()))
}

fn failed<T>(msg: impl Into<String>) -> CliResult<T> {
    Err(CliError::Failed(msg.into()))
}

struct Args {
    command: &'static str,
    positional: Vec<String>,
    options: Vec<(String, String)>,
}

impl Args {
    /// Split `args` into positionals and `--name value` / `--name=value`
    /// options; only names in `known` are accepted.
    fn parse(command: &'static str, args: &[String], known: &[&str]) -> CliResult<Args> {
        let mut positional = Vec::new();
        let mut options = Vec::new();
        let mut it = args.iter();
        let mut only_positional = false;
        while let Some(a) = it.next() {
            if only_positional || !a.starts_with("--") {
                positional.push(a.clone());
                continue;
            }
            if a == "--" {
                only_positional = true;
                continue;
            }
            let (name, inline) = match a.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (a.as_str(), None),
            };
            let name = &name[2..];
            if !known.contains(&name) {
                return usage(format!("{command}: unknown option --{name}"));
            }
            let value = match inline {
                Some(v) => v,
                None => match it.next() {
                    Some(v) => v.clone(),
                    None => return usage(format!("{command}: option --{name} needs a value")),
                },
            };
            options.push((name.to_string(), value));
        }
        Ok(Args {
            command,
            positional,
            options,
        })
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.options
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn optional(&self, name: &str) -> CliResult<Option<&str>> {
        match self.all(name).as_slice() {
            [] => Ok(None),
            [v] => Ok(Some(v)),
            _ => usage(format!("{}: --{name} given more than once", self.command)),
        }
    }

    fn required(&self, name: &str) -> CliResult<&str> {
        match self.optional(name)? {
            Some(v) => Ok(v),
            None => usage(format!("{}: missing --{name}", self.command)),
        }
    }

    fn positionals(&self, names: &[&str]) -> CliResult<&[String]> {
        if self.positional.len() != names.len() {
            return usage(format!(
                "{}: expected {} argument{} ({}), got {}",
                self.command,
                names.len(),
                if names.len() == 1 { "" } else { "s" },
                names.join(" "),
                self.positional.len()
            ));
        }
        Ok(&self.positional)
    }
}

fn read_file(path: &str, what: &str) -> CliResult<Vec<u8>> {
    std::fs::read(path).or_else(|e| failed(format!("cannot read {what} {path}: {e}")))
}

fn write_file(path: &str, data: &[u8]) -> CliResult<()> {
    std::fs::write(path, data).or_else(|e| failed(format!("cannot write {path}: {e}")))
}

fn cmd_rmod(args: &[String]) -> CliResult<ExitCode> {
    let a = Args::parse("rmod", args, &["entry", "params"])?;
    let pos = a.positionals(&["<in.elf>", "<out.rmod>"])?;
    let (input, output) = (&pos[0], &pos[1]);
    let entry = a.required("entry")?;
    let params = a.required("params")?;
    let elf = read_file(input, "ELF file")?;
    let module = rmod::elf_to_rmod(&elf, entry, params)
        .or_else(|e| failed(format!("rmod: {input}: {e}")))?;
    write_file(output, &module.to_bytes())?;
    println!(
        "{output}: image_size {:#x}, file_size {:#x}, entry {:#x}, params {:#x}, {} relocations",
        module.image_size,
        module.file_size(),
        module.entry,
        module.params,
        module.relocs.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn cmd_mkrom(args: &[String]) -> CliResult<ExitCode> {
    let a = Args::parse("mkrom", args, &["boot", "size", "out", "file"])?;
    a.positionals(&[])?;
    let boot_path = a.required("boot")?;
    let size_text = a.required("size")?;
    let out = a.required("out")?;
    let size = parse_number(size_text).or_else(|e| usage(format!("mkrom: --size: {e}")))?;
    let boot = read_file(boot_path, "boot block")?;
    let mut files = Vec::new();
    for spec in a.all("file") {
        let Some((name, path)) = spec.split_once('=') else {
            return usage(format!("mkrom: --file {spec:?} is not NAME=PATH"));
        };
        let data = read_file(path, &format!("ROM file {name:?} from"))?;
        files.push(RomFile::new(name, data));
    }
    let image = rom::build_rom(&boot, size, &files).or_else(|e| failed(format!("mkrom: {e}")))?;
    write_file(out, &image)?;
    println!("{out}: {size:#x} bytes, {} files", files.len());
    for e in rom::read_directory(&image).or_else(|e| failed(format!("mkrom: {e}")))? {
        println!("  {:#010x} {:>10} {}", e.offset, e.size, e.name);
    }
    println!(
        "  {:#010x} {:>10} (boot block)",
        image.len() - boot.len(),
        boot.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn cmd_check_smm(args: &[String]) -> CliResult<ExitCode> {
    let a = Args::parse("check-smm", args, &["allow-symbol-prefix", "max-frame"])?;
    let pos = a.positionals(&["<elf>"])?;
    let path = &pos[0];
    let max_frame = match a.optional("max-frame")? {
        Some(v) => parse_number(v).or_else(|e| usage(format!("check-smm: --max-frame: {e}")))?,
        None => DEFAULT_MAX_FRAME,
    };
    let opts = SmmCheckOptions {
        allow_symbol_prefixes: a
            .all("allow-symbol-prefix")
            .into_iter()
            .map(String::from)
            .collect(),
        max_frame,
    };
    let report = smmcheck::check_smm_file(Path::new(path), &opts)
        .or_else(|e| failed(format!("check-smm: {path}: {e}")))?;
    println!("check-smm: {path}");
    println!("{report}");
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn cmd_rmod_info(args: &[String]) -> CliResult<ExitCode> {
    let a = Args::parse("rmod-info", args, &[])?;
    let path = &a.positionals(&["<file.rmod>"])?[0];
    let data = read_file(path, "rmod")?;
    let module = rmod::Rmod::parse(&data).or_else(|e| failed(format!("{path}: {e}")))?;
    println!("{path}:\n{module}");
    Ok(ExitCode::SUCCESS)
}

fn cmd_rom_ls(args: &[String]) -> CliResult<ExitCode> {
    let a = Args::parse("rom-ls", args, &[])?;
    let path = &a.positionals(&["<rom>"])?[0];
    let data = read_file(path, "ROM image")?;
    let entries = rom::read_directory(&data).or_else(|e| failed(format!("{path}: {e}")))?;
    println!("{path}: {:#x} bytes, {} files", data.len(), entries.len());
    for e in entries {
        println!("  {:#010x} {:>10} {}", e.offset, e.size, e.name);
    }
    Ok(ExitCode::SUCCESS)
}

fn run(args: &[String]) -> CliResult<ExitCode> {
    let Some(cmd) = args.first() else {
        return usage("no command given");
    };
    let rest = &args[1..];
    if rest.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    }
    match cmd.as_str() {
        "rmod" => cmd_rmod(rest),
        "mkrom" => cmd_mkrom(rest),
        "check-smm" => cmd_check_smm(rest),
        "rmod-info" => cmd_rmod_info(rest),
        "rom-ls" => cmd_rom_ls(rest),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => usage(format!("unknown command {other:?}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(CliError::Usage(msg)) => {
            eprintln!("fwtool: {msg}\n\n{USAGE}");
            ExitCode::from(2)
        }
        Err(CliError::Failed(msg)) => {
            eprintln!("fwtool: error: {msg}");
            ExitCode::FAILURE
        }
    }
}
