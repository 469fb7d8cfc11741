//! Values between the core and Python: JSON-shaped data as dicts, durations as `timedelta`,
//! timestamps as aware `datetime`s, and the reverse for arguments.

use std::time::Duration;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDelta, PyDict, PyList};
use serde::Serialize;

/// A serde value as plain Python data: dict, list, str, int, float, bool, None.
pub(crate) fn json_to_py<'py>(py: Python<'py>, value: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value;
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => u.into_pyobject(py)?.into_any(),
            (None, Some(i), _) => i.into_pyobject(py)?.into_any(),
            (_, _, Some(f)) => f.into_pyobject(py)?.into_any(),
            _ => py.None().into_bound(py),
        },
        Value::String(s) => s.into_pyobject(py)?.into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (key, item) in map {
                dict.set_item(key, json_to_py(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

/// Any serializable core value as plain Python data (what `to_dict()` returns).
pub(crate) fn to_py_data<'py>(py: Python<'py>, value: &impl Serialize) -> PyResult<Bound<'py, PyAny>> {
    let json = serde_json::to_value(value)
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(format!("internal error: {e}")))?;
    json_to_py(py, &json)
}

/// A duration argument: seconds (int or float) or a `datetime.timedelta`.
pub(crate) fn duration_arg(value: &Bound<'_, PyAny>, name: &str) -> PyResult<Duration> {
    if let Ok(delta) = value.cast::<PyDelta>() {
        return delta.extract::<Duration>();
    }
    let seconds: f64 = value
        .extract()
        .map_err(|_| PyTypeError::new_err(format!("`{name}` must be a number of seconds or a datetime.timedelta")))?;
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| pyo3::exceptions::PyValueError::new_err(format!("`{name}` must be a positive number of seconds")))
}

/// An aware `datetime` in UTC.
pub(crate) fn timestamp_to_py<'py>(py: Python<'py>, at: jiff::Timestamp) -> PyResult<Bound<'py, PyAny>> {
    let datetime = py.import("datetime")?;
    let utc = datetime.getattr("timezone")?.getattr("utc")?;
    let seconds = at.as_second() as f64 + f64::from(at.subsec_nanosecond()) / 1e9;
    datetime.getattr("datetime")?.call_method1("fromtimestamp", (seconds, utc))
}

/// A string as Python's `repr` shows it, for `__repr__`s.
pub(crate) fn py_repr(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'").replace('\n', "\\n"))
}

/// An optional string as Python's `repr` shows it.
pub(crate) fn py_repr_opt(text: Option<&str>) -> String {
    text.map_or_else(|| "None".to_owned(), py_repr)
}

/// A path as `repr(pathlib.Path)` shows it.
pub(crate) fn path_repr(path: &std::path::Path) -> String {
    format!("PosixPath({})", py_repr(&path.display().to_string()))
}
