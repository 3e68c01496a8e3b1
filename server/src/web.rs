//! The web viewer (`server/web/`), built into the binary: `GET /` serves its page and
//! `/assets/{file}` its style sheet and modules. The files are the page's code only, no camera
//! data, so assets need no token and modules can import each other by plain URLs.

use std::sync::OnceLock;

/// One file of the viewer.
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
    etag: OnceLock<String>,
}

impl Asset {
    /// A validator for `If-None-Match`: the content's FNV-1a hash, which changes with any edit
    /// (and so with any new build that changes the file). Worked out once.
    pub fn etag(&self) -> &str {
        self.etag.get_or_init(|| {
            let hash = self
                .body
                .iter()
                .fold(0xcbf2_9ce4_8422_2325_u64, |hash, &byte| {
                    (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
                });
            format!("\"{hash:016x}\"")
        })
    }
}

macro_rules! asset {
    ($file:literal, $content_type:expr) => {
        (
            $file,
            Asset {
                content_type: $content_type,
                body: include_bytes!(concat!("../web/", $file)),
                etag: OnceLock::new(),
            },
        )
    };
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: [(&str, Asset); 9] = [
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("camera-list.js", JS),
    asset!("wall.js", JS),
    asset!("tile.js", JS),
    asset!("connection.js", JS),
    asset!("decoders.js", JS),
    asset!("storage.js", JS),
];

/// The page at `/`.
pub static INDEX: Asset = Asset {
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../web/index.html"),
    etag: OnceLock::new(),
};

/// The asset named `name` (as in `/assets/{name}`).
pub fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS
        .iter()
        .find(|(file, _)| *file == name)
        .map(|(_, asset)| asset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_and_its_modules_load_is_served() {
        let page = std::str::from_utf8(INDEX.body).unwrap();
        let mut referenced: Vec<&str> = page
            .split("/assets/")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap())
            .collect();
        for (_, asset) in &ASSETS {
            let text = std::str::from_utf8(asset.body).unwrap();
            referenced.extend(
                text.split("from './")
                    .skip(1)
                    .map(|rest| rest.split('\'').next().unwrap()),
            );
        }
        for name in referenced {
            assert!(asset(name).is_some(), "{name} is loaded but not served");
        }
    }

    #[test]
    fn etags_differ_with_content() {
        assert_ne!(
            asset("app.js").unwrap().etag(),
            asset("api.js").unwrap().etag()
        );
        assert_eq!(
            asset("app.js").unwrap().etag(),
            asset("app.js").unwrap().etag()
        );
    }
}
