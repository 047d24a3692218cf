import globals from 'globals'
import neostandard from 'neostandard'
import tseslint from 'typescript-eslint'

export default [
  ...neostandard({ ts: true, ignores: ['node_modules/**', 'coverage/**'] }),
  {
    files: ['**/*.ts'],
    languageOptions: {
      parserOptions: {
        projectService: true,
        tsconfigRootDir: import.meta.dirname,
      },
    },
    plugins: { '@typescript-eslint': tseslint.plugin },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false } }],
      // `void promise` marks a promise deliberately not awaited (e.g. Fastify's thenable reply).
      'no-void': ['error', { allowAsStatement: true }],
      // The TypeBox idiom: a schema and its static type share a name.
      '@typescript-eslint/no-redeclare': 'off',
    },
  },
  {
    // The dashboard runs in browsers: their globals only, and job data never becomes markup.
    files: ['ui/**/*.js'],
    languageOptions: { globals: { ...globals.browser } },
    rules: {
      'no-void': ['error', { allowAsStatement: true }],
      'no-restricted-properties': ['error',
        ...['innerHTML', 'outerHTML', 'insertAdjacentHTML', 'createContextualFragment', 'setHTMLUnsafe', 'write', 'writeln']
          .map(property => ({ property, message: 'the dashboard builds elements and text nodes (ui/dom.js), never markup from strings' })),
      ],
      'no-restricted-globals': ['error', 'DOMParser', 'eval', 'Function'],
    },
  },
]
