package moduletest

import (
	"bufio"
	"bytes"
	"fmt"
	"go/ast"
	"go/doc"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// apiPackages are the packages that make up Palisade's public API (docs/decisions.md, "The
// public surface"): each must document every exported identifier. examples/* are public but
// not API; they are held only to the no-internal-types rule (publicPackages).
var apiPackages = []string{"client", "client/signreq", "attest", "pal", "sdk/go/pal"}

// moduleRoot returns the checkout's root and module path, or skips when the go command is missing.
func moduleRoot(t *testing.T) (dir, path string) {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("the go command is not on PATH: this test inspects the module with it")
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}} {{.Path}}").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	dir, path, _ = strings.Cut(strings.TrimSpace(string(out)), " ")
	return dir, path
}

// publicPackages lists the module's importable packages outside internal/ that are not
// commands: every package a user can import. A directory with only tests in it (the drivers
// of the C integrations, say) has nothing to import.
func publicPackages(t *testing.T, root string) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-f", "{{if .GoFiles}}{{.Name}} {{.ImportPath}}{{end}}", "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list ./...: %v", err)
	}
	var pkgs []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		name, path, _ := strings.Cut(line, " ")
		if line == "" || name == "main" || isInternal(path) {
			continue
		}
		pkgs = append(pkgs, path)
	}
	return pkgs
}

// isInternal reports whether the go command forbids importing path from another module.
func isInternal(path string) bool {
	return strings.HasPrefix(path, "internal/") || strings.Contains(path, "/internal/") ||
		strings.HasSuffix(path, "/internal") || path == "internal"
}

// TestAPIPackagesAreDocumented fails for an API package without a package comment, or an
// exported identifier without a doc comment (a constant or variable may share its group's).
// Every file is read, whatever its build constraints, so that sdk/go/pal's wasip1 side counts.
func TestAPIPackagesAreDocumented(t *testing.T) {
	root, _ := moduleRoot(t)
	for _, rel := range apiPackages {
		t.Run(rel, func(t *testing.T) {
			for _, miss := range undocumented(t, filepath.Join(root, rel)) {
				t.Errorf("%s: %s", rel, miss)
			}
		})
	}
}

// TestAPIPackagesHaveRunnableExamples fails for an API package without an Example that go test
// runs (one with an "Output:" comment): its manual must show working code, checked at every run.
func TestAPIPackagesHaveRunnableExamples(t *testing.T) {
	root, _ := moduleRoot(t)
	for _, rel := range apiPackages {
		t.Run(rel, func(t *testing.T) {
			fset := token.NewFileSet()
			names, err := filepath.Glob(filepath.Join(root, rel, "*_test.go"))
			if err != nil {
				t.Fatal(err)
			}
			var files []*ast.File
			for _, name := range names {
				f, err := parser.ParseFile(fset, name, nil, parser.ParseComments)
				if err != nil {
					t.Fatal(err)
				}
				files = append(files, f)
			}
			var all, runnable []string
			for _, ex := range doc.Examples(files...) {
				all = append(all, "Example"+ex.Name)
				if ex.Output != "" || ex.EmptyOutput {
					runnable = append(runnable, "Example"+ex.Name)
				}
			}
			if len(runnable) == 0 {
				t.Errorf("%s has no runnable example (examples: %v)", rel, all)
			}
		})
	}
}

// undocumented returns what lacks documentation in the package in dir, sorted.
func undocumented(t *testing.T, dir string) []string {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var miss []string
	hasPkgDoc := false
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		if f.Doc != nil {
			hasPkgDoc = true
		}
		for _, d := range f.Decls {
			miss = append(miss, undocumentedDecl(fset, d)...)
		}
	}
	if !hasPkgDoc {
		miss = append(miss, "no package comment")
	}
	sort.Strings(miss)
	return miss
}

func undocumentedDecl(fset *token.FileSet, d ast.Decl) []string {
	var miss []string
	where := func(n ast.Node, what string) {
		p := fset.Position(n.Pos())
		miss = append(miss, fmt.Sprintf("%s:%d: %s has no doc comment", filepath.Base(p.Filename), p.Line, what))
	}
	switch d := d.(type) {
	case *ast.FuncDecl:
		if !d.Name.IsExported() || d.Doc != nil {
			return nil
		}
		if d.Recv != nil {
			recv := receiverName(d.Recv.List[0].Type)
			if !ast.IsExported(recv) {
				return nil // a method of an unexported type is not in the API
			}
			where(d, "method "+recv+"."+d.Name.Name)
			return miss
		}
		where(d, "func "+d.Name.Name)
	case *ast.GenDecl:
		grouped := d.Lparen.IsValid()
		for _, s := range d.Specs {
			switch s := s.(type) {
			case *ast.TypeSpec:
				if !s.Name.IsExported() {
					continue
				}
				if s.Doc == nil && (grouped || d.Doc == nil) {
					where(s, "type "+s.Name.Name)
				}
				miss = append(miss, undocumentedFields(fset, s)...)
			case *ast.ValueSpec:
				for _, n := range s.Names {
					if n.IsExported() && s.Doc == nil && d.Doc == nil && s.Comment == nil {
						where(n, d.Tok.String()+" "+n.Name)
					}
				}
			}
		}
	}
	return miss
}

// undocumentedFields checks the exported fields of an exported struct and the methods of an
// exported interface: each needs a doc or a line comment, unless its name says it all because
// the type's own comment describes it (a field of a one-line struct is still required).
func undocumentedFields(fset *token.FileSet, s *ast.TypeSpec) []string {
	var fields *ast.FieldList
	switch t := s.Type.(type) {
	case *ast.StructType:
		fields = t.Fields
	case *ast.InterfaceType:
		fields = t.Methods
	default:
		return nil
	}
	var miss []string
	for _, f := range fields.List {
		if f.Doc != nil || f.Comment != nil {
			continue
		}
		for _, n := range f.Names {
			if n.IsExported() {
				p := fset.Position(n.Pos())
				miss = append(miss, fmt.Sprintf("%s:%d: %s.%s has no comment", filepath.Base(p.Filename), p.Line, s.Name.Name, n.Name))
			}
		}
	}
	return miss
}

func receiverName(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.StarExpr:
		return receiverName(e.X)
	case *ast.IndexExpr:
		return receiverName(e.X)
	case *ast.IndexListExpr:
		return receiverName(e.X)
	case *ast.Ident:
		return e.Name
	}
	return ""
}

// TestPublicPackagesExposeNoInternalType fails when an exported identifier of a public package
// (API or example) mentions, in its type, a type declared in an internal package: a user could
// get such a value but not name its type, so it would not be a usable API. It reads the
// compiler's export data (go list -export), which is what an importer of the package sees.
func TestPublicPackagesExposeNoInternalType(t *testing.T) {
	root, _ := moduleRoot(t)
	pkgs := publicPackages(t, root)
	exports := exportData(t, root, pkgs)
	fset := token.NewFileSet()
	imp := importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) {
		f, ok := exports[path]
		if !ok {
			return nil, fmt.Errorf("no export data for %s", path)
		}
		return os.Open(f)
	})
	for _, path := range pkgs {
		t.Run(path, func(t *testing.T) {
			p, err := imp.Import(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, leak := range internalLeaks(p) {
				t.Error(leak)
			}
		})
	}
}

// exportData maps every package that pkgs depend on to its export data file.
func exportData(t *testing.T, root string, pkgs []string) map[string]string {
	t.Helper()
	args := append([]string{"list", "-export", "-deps", "-f", "{{.ImportPath}}\t{{.Export}}"}, pkgs...)
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -export: %v\n%s", err, stderr.Bytes())
	}
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if path, file, ok := strings.Cut(sc.Text(), "\t"); ok && file != "" {
			m[path] = file
		}
	}
	return m
}

// internalLeaks returns, for each exported object of p, the internal types its API mentions.
func internalLeaks(p *types.Package) []string {
	var leaks []string
	seen := map[types.Type]bool{}
	var walk func(where string, t types.Type)
	walk = func(where string, t types.Type) {
		if seen[t] {
			return
		}
		seen[t] = true
		switch t := t.(type) {
		case *types.Alias:
			walk(where, types.Unalias(t))
		case *types.Named:
			obj := t.Obj()
			if obj.Pkg() == nil {
				return // error, comparable
			}
			if isInternal(obj.Pkg().Path()) {
				leaks = append(leaks, fmt.Sprintf("%s mentions %s.%s, which a user cannot name", where, obj.Pkg().Path(), obj.Name()))
				return
			}
			for i := range t.TypeArgs().Len() {
				walk(where, t.TypeArgs().At(i))
			}
			if obj.Pkg() != p {
				return // another public package answers for its own API
			}
			walk(where, t.Underlying())
			for i := range t.NumMethods() {
				if m := t.Method(i); m.Exported() {
					walk(where+"."+m.Name(), m.Type())
				}
			}
		case *types.Pointer:
			walk(where, t.Elem())
		case *types.Slice:
			walk(where, t.Elem())
		case *types.Array:
			walk(where, t.Elem())
		case *types.Map:
			walk(where, t.Key())
			walk(where, t.Elem())
		case *types.Chan:
			walk(where, t.Elem())
		case *types.Signature:
			for i := range t.Params().Len() {
				walk(where, t.Params().At(i).Type())
			}
			for i := range t.Results().Len() {
				walk(where, t.Results().At(i).Type())
			}
		case *types.Struct:
			for i := range t.NumFields() {
				if f := t.Field(i); f.Exported() {
					walk(where+"."+f.Name(), f.Type())
				}
			}
		case *types.Interface:
			for i := range t.NumMethods() {
				if m := t.Method(i); m.Exported() {
					walk(where+"."+m.Name(), m.Type())
				}
			}
		}
	}
	scope := p.Scope()
	for _, name := range scope.Names() {
		if obj := scope.Lookup(name); obj.Exported() {
			walk(name, obj.Type())
		}
	}
	return leaks
}
