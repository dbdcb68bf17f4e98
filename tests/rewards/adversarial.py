"""Adversarial model outputs (and references) for the verifier tests."""

import os


def code_strings(marker_dir: str, tag: str) -> list[str]:
    """Strings that would create a file under ``marker_dir`` if anything evaluated them."""

    def touch(k):
        return os.path.join(marker_dir, f"PWNED_{tag}_{k}")

    return [
        f"__import__('os').system('touch {touch(0)}')",
        f"\\boxed{{__import__('os').system('touch {touch(1)}')}}",
        f"The answer is $__import__('os').system('touch {touch(2)}')$",
        f"\\boxed{{eval(\"__import__('os').system('touch {touch(3)}')\")}}",
        f"\\boxed{{exec(\"import os; os.system('touch {touch(4)}')\")}}",
        f"\\boxed{{().__class__.__bases__[0].__subclasses__()}} {touch(5)}",
        f"\\boxed{{(lambda: __import__('subprocess').run(['touch', '{touch(6)}']))()}}",
        f"\\boxed{{\\text{{__import__('os').system('touch {touch(7)}')}}}}",
        f"\\boxed{{open('{touch(8)}', 'w').write('x')}}",
        f'\\boxed{{__import__("pathlib").Path("{touch(9)}").touch()}}',
        f"\\boxed{{x}} ; import os; os.system('touch {touch(10)}')",
    ]


def huge_and_pathological() -> dict[str, str]:
    deep = 10_000
    return {
        "1MB of text": "a" * (1 << 20),
        "1MB of digits": "1" * (1 << 20),
        "1MB inside a box": "\\boxed{" + "7" * (1 << 20) + "}",
        "1MB of unclosed boxes": "\\boxed{" * ((1 << 20) // 7),
        "10k nested braces in a box": "\\boxed{" + "{" * deep + "1" + "}" * deep + "}",
        "10k unbalanced braces": "\\boxed{" + "{" * deep,
        "10k nested fracs": "\\boxed{" + "\\frac{1}{" * deep + "2" + "}" * deep + "}",
        "9^9^9^9 plain": "so the result is 9^9^9^9",
        "9^9^9^9 boxed": "\\boxed{9^9^9^9}",
        "9^{9^{9^9}} boxed": "\\boxed{9^{9^{9^{9}}}}",
        "10^{10^{10^{10}}}": "\\boxed{10^{10^{10^{10}}}}",
        "huge factorial": "\\boxed{99999999!}",
        "tower of twos": "\\boxed{2^{2^{2^{2^{2^{2}}}}}}",
        "huge polynomial power": "\\boxed{(x+1)^{100000} - (x-1)^{100000}}",
        "500 nested sqrt": "\\boxed{" + "\\sqrt{" * 500 + "2" + "}" * 500 + "}",
        "big matrix": "\\boxed{\\begin{pmatrix}" + "\\\\".join(["&".join(["x"] * 60)] * 60) + "\\end{pmatrix}}",
        "integral": "\\boxed{\\int_0^\\infty e^{-x^2} \\, dx}",
        "infinite sum": "\\boxed{\\sum_{n=1}^{\\infty} \\frac{1}{n^2}}",
        "unbalanced left": "\\boxed{\\left( \\frac{1}{2}}",
        "null bytes and junk": "\\boxed{\x00\ufffd\u202e1\x00}",
        "backslashes": "\\boxed{" + "\\" * 999 + "}",
        "empty box": "\\boxed{}",
        "nested boxes": "\\boxed{\\boxed{\\boxed{1}}}",
        "dollar soup": "$" * 5000,
        "answer-is soup": "answer is " * 100_000,
        "whitespace run": "answer" + " " * 100_000 + "x",
        "many variables": "\\boxed{" + "".join(f"a_{{{i}}}" for i in range(300)) + "}",
    }
