// MathJax 3 configuration, read by javascripts/mathjax/tex-svg-full.js (loaded after this file,
// from the site itself: see docs/hooks/mathjax.py).
//
// Markdown pages: pymdownx.arithmatex (generic mode) wraps every formula in an element of class
// "arithmatex", as \( ... \) inline or \[ ... \] displayed. Notebook pages: the Markdown cells
// (class "jp-RenderedMarkdown") keep Jupyter's $ ... $ and $$ ... $$. Everything else is left
// alone, so a dollar sign in prose or code is never read as maths: every element with a class
// is skipped unless it has one of those two, and an element without a class inherits its
// parent's choice (".*|", often seen, would also match "no class" and skip the paragraphs inside
// a notebook cell).
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".+",
    processHtmlClass: "arithmatex|jp-RenderedMarkdown",
  },
};
