package search

import (
	"bytes"
	"unicode/utf8"

	"github.com/blevesearch/bleve/v2"
	"github.com/blevesearch/bleve/v2/analysis"
	_ "github.com/blevesearch/bleve/v2/analysis/analyzer/keyword"
	"github.com/blevesearch/bleve/v2/analysis/lang/cjk"
	"github.com/blevesearch/bleve/v2/analysis/token/lowercase"
	"github.com/blevesearch/bleve/v2/analysis/tokenizer/single"
	"github.com/blevesearch/bleve/v2/analysis/tokenizer/unicode"
	"github.com/blevesearch/bleve/v2/document"
	"github.com/blevesearch/bleve/v2/mapping"
	"github.com/blevesearch/bleve/v2/registry"
	index "github.com/blevesearch/bleve_index_api"
)

// How text is analysed. Japanese has no spaces between words, so CJK text
// (kanji, hiragana, katakana, hangul) is indexed as overlapping bigrams:
// 課内会議資料 → 課内 内会 会議 議資 資料. A query word is analysed the same
// way and must match as a phrase (its bigrams adjacent, in order), so 会議,
// 資料 and 会議資料 all find 課内会議資料, and 資料会議 does not. Latin words
// and numbers are single lower-cased tokens (no stemming: a word matches
// itself), after full-width letters are folded to ASCII and half-width
// katakana to full-width; 防災訓練schedule is 防災 災訓 訓練 schedule.
//
// A one-character query (会) has no bigram to match, so each text field has
// a companion field of single CJK characters, searched by term only.
const (
	textAnalyzer  = "machi_text"
	charsAnalyzer = "machi_cjk_chars"
	charsFilter   = "machi_cjk_chars"
)

// Field names. Text fields are named as the spec's keys.
const (
	fieldRoom   = "room_id"
	fieldSender = "sender"
	fieldType   = "type"
	fieldPos    = "pos"
	fieldURL    = "url"
	charsSuffix = "_chars"
)

// Keys are the content keys the spec lets a search name, and the event type
// each is indexed from.
var Keys = map[string]string{
	"content.body":  "m.room.message",
	"content.name":  "m.room.name",
	"content.topic": "m.room.topic",
}

var (
	textA  analysis.Analyzer
	charsA analysis.Analyzer
	kwA    analysis.Analyzer
)

func init() {
	if err := registry.RegisterTokenFilter(charsFilter, func(map[string]any, *registry.Cache) (analysis.TokenFilter, error) {
		return cjkChars{}, nil
	}); err != nil {
		panic(err)
	}
	if err := registry.RegisterAnalyzer(textAnalyzer, func(map[string]any, *registry.Cache) (analysis.Analyzer, error) {
		return textA, nil
	}); err != nil {
		panic(err)
	}
	if err := registry.RegisterAnalyzer(charsAnalyzer, func(map[string]any, *registry.Cache) (analysis.Analyzer, error) {
		return charsA, nil
	}); err != nil {
		panic(err)
	}
	tok := unicode.NewUnicodeTokenizer()
	textA = &analysis.DefaultAnalyzer{Tokenizer: tok, TokenFilters: []analysis.TokenFilter{
		cjk.NewCJKWidthFilter(), lowercase.NewLowerCaseFilter(), cjk.NewCJKBigramFilter(false),
	}}
	charsA = &analysis.DefaultAnalyzer{Tokenizer: tok, TokenFilters: []analysis.TokenFilter{
		cjk.NewCJKWidthFilter(), cjkChars{},
	}}
	kwA = &analysis.DefaultAnalyzer{Tokenizer: single.NewSingleTokenTokenizer()}
}

// cjkChars keeps the CJK characters of a token stream, one token each.
type cjkChars struct{}

func (cjkChars) Filter(in analysis.TokenStream) analysis.TokenStream {
	out := make(analysis.TokenStream, 0, len(in))
	pos := 1
	for _, t := range in {
		if t.Type != analysis.Ideographic {
			continue
		}
		for i := 0; i < len(t.Term); {
			_, n := utf8.DecodeRune(t.Term[i:])
			out = append(out, &analysis.Token{Term: t.Term[i : i+n], Start: t.Start + i, End: t.Start + i + n, Position: pos, Type: analysis.Single})
			pos++
			i += n
		}
	}
	return out
}

// newMapping describes the documents (which are built directly, see
// newDocument) so that the index on disk is self-describing.
func newMapping() mapping.IndexMapping {
	m := bleve.NewIndexMapping()
	m.DefaultAnalyzer = textAnalyzer
	doc := bleve.NewDocumentStaticMapping()
	kw := func() *mapping.FieldMapping {
		f := bleve.NewKeywordFieldMapping()
		f.Store, f.IncludeInAll, f.IncludeTermVectors, f.DocValues = false, false, false, false
		return f
	}
	doc.AddFieldMappingsAt(fieldRoom, kw())
	doc.AddFieldMappingsAt(fieldSender, kw())
	doc.AddFieldMappingsAt(fieldType, kw())
	pos := bleve.NewNumericFieldMapping()
	pos.Store, pos.IncludeInAll, pos.DocValues = false, false, true
	doc.AddFieldMappingsAt(fieldPos, pos)
	url := bleve.NewBooleanFieldMapping()
	url.Store, url.IncludeInAll = false, false
	doc.AddFieldMappingsAt(fieldURL, url)
	content := bleve.NewDocumentStaticMapping()
	for key := range Keys {
		name := key[len("content."):]
		text := bleve.NewTextFieldMapping()
		text.Analyzer, text.Store, text.IncludeInAll, text.IncludeTermVectors = textAnalyzer, false, false, true
		content.AddFieldMappingsAt(name, text)
		chars := bleve.NewTextFieldMapping()
		chars.Analyzer, chars.Store, chars.IncludeInAll, chars.IncludeTermVectors = charsAnalyzer, false, false, false
		content.AddFieldMappingsAt(name+charsSuffix, chars)
	}
	doc.AddSubDocumentMapping("content", content)
	m.DefaultMapping = doc
	return m
}

// entry is what the index keeps of one event.
type entry struct {
	id, room, sender, typ string
	pos                   int64
	key, text             string // content key and its value
	hasURL                bool
}

// newDocument builds the index document of e without reflection.
func newDocument(e entry) *document.Document {
	d := document.NewDocument(e.id)
	kw := index.IndexField
	d.AddField(document.NewTextFieldCustom(fieldRoom, nil, []byte(e.room), kw, kwA))
	d.AddField(document.NewTextFieldCustom(fieldSender, nil, []byte(e.sender), kw, kwA))
	d.AddField(document.NewTextFieldCustom(fieldType, nil, []byte(e.typ), kw, kwA))
	d.AddField(document.NewNumericFieldWithIndexingOptions(fieldPos, nil, float64(e.pos), index.IndexField|index.DocValues))
	d.AddField(document.NewBooleanFieldWithIndexingOptions(fieldURL, nil, e.hasURL, index.IndexField))
	d.AddField(document.NewTextFieldCustom(e.key, nil, []byte(e.text), index.IndexField|index.IncludeTermVectors, textA))
	d.AddField(document.NewTextFieldCustom(e.key+charsSuffix, nil, []byte(e.text), index.IndexField, charsA))
	return d
}

// queryWord is one whitespace-separated word of a search term, analysed.
type queryWord struct {
	terms []string // the bigrams (and other tokens) in order
	char  string   // set instead when the word is one CJK character
}

// analyseTerm splits a search term into words and analyses each; words
// that analyse to nothing (punctuation) are dropped.
func analyseTerm(term string) []queryWord {
	var out []queryWord
	for _, w := range bytes.Fields([]byte(term)) {
		toks := textA.Analyze(w)
		if len(toks) == 0 {
			continue
		}
		if len(toks) == 1 && toks[0].Type == analysis.Single {
			out = append(out, queryWord{char: string(toks[0].Term)})
			continue
		}
		q := queryWord{terms: make([]string, len(toks))}
		for i, t := range toks {
			q.terms[i] = string(t.Term)
		}
		out = append(out, q)
	}
	return out
}
