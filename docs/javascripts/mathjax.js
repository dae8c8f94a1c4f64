// MathJax 3 configuration, read by javascripts/mathjax/tex-svg-full.js (loaded after this file,
// from the site itself: see docs/hooks/mathjax.py).
//
// Only three kinds of element are typeset:
// - "arithmatex": every formula of the Markdown pages, wrapped by pymdownx.arithmatex (generic
//   mode) as \( ... \) inline or \[ ... \] displayed;
// - "jp-RenderedMarkdown": the Markdown cells of the notebooks, which keep Jupyter's $ ... $ and
//   $$ ... $$;
// - "md-ellipsis": the titles in the navigation, where a notebook's headings keep their $ ... $.
// Every other element with a class is skipped, and an element without a class inherits its
// parent's choice, so a dollar sign in prose, code or outputs is never read as maths. (The often
// seen ignoreHtmlClass ".*|" also matches "no class" and would skip the paragraphs inside a
// notebook cell.)
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".+",
    processHtmlClass: "arithmatex|jp-RenderedMarkdown|md-ellipsis",
  },
};
