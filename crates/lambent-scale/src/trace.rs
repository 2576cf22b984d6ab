//! Reading invocation traces in the Azure Functions 2019 layout: `invocations.csv`
//! (`HashOwner,HashApp,HashFunction,Trigger,` then one count per minute), and when
//! present `durations.csv` (average ms per function) and `memory.csv` (per function,
//! as in the vHive cleaned sample, or per app as in the original day files, then
//! split evenly over the app's functions).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Duration assumed when a trace has no `durations.csv` (or no row for a function).
pub const DEFAULT_DURATION_MS: f64 = 1000.0;
/// Memory assumed when a trace has no `memory.csv` (or no row for a function).
pub const DEFAULT_MEMORY_MB: u32 = 128;

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {problem}")]
    Format {
        path: PathBuf,
        line: u64,
        problem: String,
    },
}

#[derive(Debug, Clone)]
pub struct TraceFunction {
    /// `HashOwner/HashApp/HashFunction`.
    pub key: String,
    pub trigger: String,
    /// Invocations in each minute of the trace.
    pub per_minute: Vec<u32>,
    pub duration_ms: f64,
    pub memory_mb: u32,
}

impl TraceFunction {
    pub fn invocations(&self) -> u64 {
        self.per_minute.iter().map(|&n| u64::from(n)).sum()
    }
}

#[derive(Debug, Clone)]
pub struct Trace {
    /// The first minute column's number (480 for the sample, 1 for a day file).
    pub first_minute: u32,
    pub minutes: usize,
    pub functions: Vec<TraceFunction>,
}

impl Trace {
    pub fn load(dir: &Path) -> Result<Self, TraceError> {
        let path = dir.join("invocations.csv");
        let (header, rows) = read_csv(&path)?;
        let format = |line: u64, problem: String| TraceError::Format {
            path: path.clone(),
            line,
            problem,
        };
        let expected = ["HashOwner", "HashApp", "HashFunction", "Trigger"];
        if header.len() < 5 || header[..4] != expected {
            return Err(format(
                1,
                "expected the columns HashOwner,HashApp,HashFunction,Trigger and then one per minute".into(),
            ));
        }
        let first_minute: u32 = header[4]
            .parse()
            .map_err(|_| format(1, format!("minute column {:?} is not a number", header[4])))?;
        let minutes = header.len() - 4;
        let mut functions = Vec::with_capacity(rows.len());
        for (line, row) in rows {
            if row.len() != header.len() {
                return Err(format(
                    line,
                    format!(
                        "{} columns where the header has {}",
                        row.len(),
                        header.len()
                    ),
                ));
            }
            let per_minute = row[4..]
                .iter()
                .map(|c| c.trim().parse::<u32>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format(line, format!("an invocation count is not a number: {e}")))?;
            functions.push(TraceFunction {
                key: format!("{}/{}/{}", row[0], row[1], row[2]),
                trigger: row[3].clone(),
                per_minute,
                duration_ms: DEFAULT_DURATION_MS,
                memory_mb: DEFAULT_MEMORY_MB,
            });
        }
        let mut trace = Trace {
            first_minute,
            minutes,
            functions,
        };
        trace.read_durations(&dir.join("durations.csv"))?;
        trace.read_memory(&dir.join("memory.csv"))?;
        Ok(trace)
    }

    pub fn invocations(&self) -> u64 {
        self.functions.iter().map(TraceFunction::invocations).sum()
    }

    fn read_durations(&mut self, path: &Path) -> Result<(), TraceError> {
        if !path.exists() {
            return Ok(());
        }
        let (header, rows) = read_csv(path)?;
        let col = |name: &str| column(path, &header, name);
        let (owner, app, function, average) = (
            col("HashOwner")?,
            col("HashApp")?,
            col("HashFunction")?,
            col("Average")?,
        );
        let mut by_key = HashMap::new();
        for (line, row) in rows {
            let ms: f64 = field(path, line, &row, average)?;
            let key = format!("{}/{}/{}", row[owner], row[app], row[function]);
            by_key.insert(key, ms.max(1.0));
        }
        for f in &mut self.functions {
            if let Some(ms) = by_key.get(&f.key) {
                f.duration_ms = *ms;
            }
        }
        Ok(())
    }

    fn read_memory(&mut self, path: &Path) -> Result<(), TraceError> {
        if !path.exists() {
            return Ok(());
        }
        let (header, rows) = read_csv(path)?;
        let col = |name: &str| column(path, &header, name);
        let (owner, app, average) = (
            col("HashOwner")?,
            col("HashApp")?,
            col("AverageAllocatedMb")?,
        );
        let function = header.iter().position(|h| h == "HashFunction");
        let mut per_function = HashMap::new();
        let mut per_app = HashMap::new();
        for (line, row) in rows {
            let mb: f64 = field(path, line, &row, average)?;
            let app_key = format!("{}/{}", row[owner], row[app]);
            match function {
                Some(fc) => {
                    per_function.insert(format!("{app_key}/{}", row[fc]), mb);
                }
                None => {
                    per_app.insert(app_key, mb);
                }
            }
        }
        let mut functions_per_app: HashMap<String, usize> = HashMap::new();
        for f in &self.functions {
            *functions_per_app.entry(app_of(&f.key)).or_default() += 1;
        }
        for f in &mut self.functions {
            let app = app_of(&f.key);
            let mb = per_function.get(&f.key).copied().or_else(|| {
                let n = functions_per_app.get(&app).copied().unwrap_or(1).max(1);
                per_app.get(&app).map(|mb| mb / n as f64)
            });
            if let Some(mb) = mb {
                f.memory_mb = (mb.round() as u32).max(1);
            }
        }
        Ok(())
    }
}

fn app_of(key: &str) -> String {
    key.rsplit_once('/')
        .map(|(a, _)| a)
        .unwrap_or(key)
        .to_string()
}

type Rows = Vec<(u64, Vec<String>)>;

fn read_csv(path: &Path) -> Result<(Vec<String>, Rows), TraceError> {
    let io = |source| TraceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .map_err(|e| match e.into_kind() {
            csv::ErrorKind::Io(e) => io(e),
            other => io(std::io::Error::other(format!("{other:?}"))),
        })?;
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| csv_error(path, e))?
        .iter()
        .map(str::to_string)
        .collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(path, e))?;
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        rows.push((line, record.iter().map(str::to_string).collect()));
    }
    Ok((header, rows))
}

fn csv_error(path: &Path, e: csv::Error) -> TraceError {
    TraceError::Format {
        path: path.to_path_buf(),
        line: e.position().map(|p| p.line()).unwrap_or(0),
        problem: e.to_string(),
    }
}

fn column(path: &Path, header: &[String], name: &str) -> Result<usize, TraceError> {
    header
        .iter()
        .position(|h| h == name)
        .ok_or_else(|| TraceError::Format {
            path: path.to_path_buf(),
            line: 1,
            problem: format!("no {name} column"),
        })
}

fn field<T: std::str::FromStr>(
    path: &Path,
    line: u64,
    row: &[String],
    at: usize,
) -> Result<T, TraceError> {
    row.get(at)
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| TraceError::Format {
            path: path.to_path_buf(),
            line,
            problem: format!("column {} is missing or not a number", at + 1),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("{e}"));
    }

    /// The original day files: minutes 1..1440 and memory per app, split evenly
    /// over the app's functions; what is missing takes the stated defaults.
    #[test]
    fn day_files_with_memory_per_app() {
        let dir = std::env::temp_dir().join(format!("lambent-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        write(
            &dir,
            "invocations.csv",
            "HashOwner,HashApp,HashFunction,Trigger,1,2,3\no,a,f1,http,1,0,2\no,a,f2,timer,0,1,0\no,b,g,queue,5,5,5\n",
        );
        write(
            &dir,
            "memory.csv",
            "HashOwner,HashApp,SampleCount,AverageAllocatedMb\no,a,10,300\n",
        );
        write(
            &dir,
            "durations.csv",
            "HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum\no,b,g,0,1,0,0\n",
        );
        let trace = Trace::load(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((trace.first_minute, trace.minutes), (1, 3));
        assert_eq!(trace.invocations(), 19);
        let mb: Vec<u32> = trace.functions.iter().map(|f| f.memory_mb).collect();
        assert_eq!(mb, [150, 150, DEFAULT_MEMORY_MB]);
        let ms: Vec<f64> = trace.functions.iter().map(|f| f.duration_ms).collect();
        assert_eq!(ms, [DEFAULT_DURATION_MS, DEFAULT_DURATION_MS, 1.0]);
        // A row with a missing column names its line.
        write(
            &dir,
            "invocations.csv",
            "HashOwner,HashApp,HashFunction,Trigger,1,2\no,a,f,http,1\n",
        );
        let err = Trace::load(&dir).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("columns"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    }
}
