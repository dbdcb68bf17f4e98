"""The answer-equivalence table: (model output, reference, expected reward)."""

MATH_PAIRS = [
    # --- integers and plain numbers
    ("The total is \\boxed{204}.", "204", 1.0),
    ("\\boxed{204}", "\\boxed{204}", 1.0),
    ("So the answer is \\boxed{1,000}.", "1000", 1.0),
    ("\\boxed{-7}", "7", 0.0),
    ("\\boxed{0.5}", "\\frac{1}{2}", 1.0),
    ("\\boxed{1.60}", "1.6", 1.0),
    ("\\boxed{4.5\\times 10^{33}}", "4.5e33", 1.0),
    ("\\boxed{4.6\\times 10^{33}}", "4.5e33", 0.0),
    # --- fractions
    ("\\boxed{\\frac{14}{3}}", "\\frac{14}{3}", 1.0),
    ("\\boxed{\\dfrac{14}{3}}", "\\frac{14}{3}", 1.0),
    ("\\boxed{\\tfrac{28}{6}}", "\\frac{14}{3}", 1.0),
    ("\\boxed{14/3}", "\\frac{14}{3}", 1.0),
    ("\\boxed{\\frac12}", "0.5", 1.0),
    ("\\boxed{\\frac{1}{3}}", "\\frac{1}{2}", 0.0),
    ("\\boxed{-\\frac{3}{4}}", "\\frac{-3}{4}", 1.0),
    # --- radicals
    ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}", 1.0),
    ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt{2}}", 1.0),
    ("\\boxed{\\sqrt{3}}", "\\sqrt{2}", 0.0),
    ("\\boxed{3\\sqrt{13}}", "\\sqrt{117}", 1.0),
    ("\\boxed{\\sqrt[3]{27}}", "3", 1.0),
    # --- intervals
    ("\\boxed{(1, 2]}", "(1,2]", 1.0),
    ("\\boxed{[0,1)}", "(0,1]", 0.0),
    ("\\boxed{(-\\infty,0)\\cup(1,\\infty)}", "(-\\infty, 0) \\cup (1, \\infty)", 1.0),
    ("\\boxed{[1,2]}", "(1,2)", 0.0),
    # --- sets and tuples
    ("\\boxed{\\{3,2,1\\}}", "\\{1,2,3\\}", 1.0),
    ("\\boxed{\\{1,3\\}}", "\\{1,2\\}", 0.0),
    ("\\boxed{69, 84}", "$69$,$84$", 1.0),
    ("\\boxed{69}", "$69$,$84$", 0.0),
    ("\\boxed{(3,\\frac{\\pi}{2})}", "\\left( 3, \\frac{\\pi}{2} \\right)", 1.0),
    # --- units, degrees, percent, money
    ("\\boxed{5\\text{ cm}}", "5", 1.0),
    ("\\boxed{90^\\circ}", "90", 1.0),
    ("\\boxed{\\$36}", "\\$36", 1.0),
    ("\\boxed{36}", "\\$36", 1.0),
    ("\\boxed{27 \\text{ miles}}", "27", 1.0),
    ("\\boxed{28 \\text{ miles}}", "27", 0.0),
    # --- LaTeX variants and expressions
    ("\\boxed{\\left(x+1\\right)^2}", "x^2+2x+1", 1.0),
    ("\\boxed{p-q}", "p - q", 1.0),
    ("\\boxed{q-p}", "p - q", 0.0),
    ("\\boxed{2\\pi}", "6.283185307", 1.0),
    ("\\boxed{\\pi r^{2}}", "r^2\\pi", 1.0),
    ("\\boxed{x=3}", "3", 1.0),
    ("\\boxed{\\text{Evelyn}}", "\\text{Evelyn}", 1.0),
    ("\\boxed{\\text{Bob}}", "\\text{Evelyn}", 0.0),
    ("\\boxed{2^{10}}", "1024", 1.0),
    ("\\boxed{\\infty}", "\\infty", 1.0),
    ("\\boxed{-\\infty}", "\\infty", 0.0),
    # --- extraction: last box, fallbacks, nothing
    ("First \\boxed{3}, then corrected: \\boxed{4}", "4", 1.0),
    ("First \\boxed{4}, then corrected: \\boxed{3}", "4", 0.0),
    ("The final answer is $\\frac{3}{4}$.", "0.75", 1.0),
    ("so we get 12 apples, plus 30 more: 42", "42", 1.0),
    ("I do not know.", "42", 0.0),
]

CHOICE_PAIRS = [
    ("The answer is (C).", "C", 1.0),
    ("Therefore \\boxed{D}", "D", 1.0),
    ("\\boxed{\\text{(B)}}", "B", 1.0),
    ("**Answer:** A", "A", 1.0),
    ("Answer: B", "C", 0.0),
    ("It is a planet with mass 2.", "A", 0.0),
]
