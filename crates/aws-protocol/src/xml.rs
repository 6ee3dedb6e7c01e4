//! A minimal XML writer for AWS responses: elements and escaped text, nothing else.

use quick_xml::escape::escape;

pub(crate) struct Xml(String);

impl Xml {
    pub fn document() -> Self {
        Xml(String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"))
    }
    /// A piece of a document, to be spliced into one with [`Xml::raw`].
    pub fn fragment() -> Self {
        Xml(String::new())
    }
    /// Appends already-encoded XML.
    pub fn raw(&mut self, xml: &str) {
        self.0.push_str(xml);
    }
    pub fn open(&mut self, name: &str) {
        self.0.push('<');
        self.0.push_str(name);
        self.0.push('>');
    }
    /// Opens an element with an `xmlns` attribute (none if `namespace` is empty).
    pub fn open_ns(&mut self, name: &str, namespace: &str) {
        if namespace.is_empty() {
            return self.open(name);
        }
        self.0.push_str(&format!("<{name} xmlns=\"{}\">", escape(namespace)));
    }
    pub fn close(&mut self, name: &str) {
        self.0.push_str("</");
        self.0.push_str(name);
        self.0.push('>');
    }
    pub fn leaf(&mut self, name: &str, text: &str) {
        self.open(name);
        self.0.push_str(&escape(text));
        self.close(name);
    }
    pub fn finish(self) -> String {
        self.0
    }
}
