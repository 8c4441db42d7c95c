import json

import pytest

from prdarts_timm import Genotype, GenotypeError, get_genotype, list_genotypes


def test_published_genotypes_ship_as_valid_json():
    names = list_genotypes()
    assert {'prdarts_99', 'prdarts_90', 'prdarts_95', 'prdarts_onestep_99', 'darts_v1', 'darts_v2'} <= set(names)
    for name in names:
        g = get_genotype(name)
        assert len(g.normal) == len(g.reduce) == 8 and g.normal_concat == (2, 3, 4, 5)


def test_prdarts_99_cell_matches_method_note():
    g = get_genotype('prdarts_99')
    assert g.normal == (('avg_pool_3x3', 0), ('skip_connect', 1), ('dil_conv_5x5', 1), ('skip_connect', 2),
                        ('avg_pool_3x3', 2), ('skip_connect', 1), ('skip_connect', 4), ('skip_connect', 3))
    assert g.reduce[1] == ('sep_conv_3x3', 0) and g.reduce[-1] == ('skip_connect', 4)


def test_json_round_trip(tmp_path):
    g = get_genotype('darts_v2')
    path = tmp_path / 'sub' / 'g.json'
    g.save(path)
    assert Genotype.load(path) == g
    assert get_genotype(str(path)) == g
    assert get_genotype(json.loads(path.read_text())) == g
    assert g.same_cells(Genotype.from_dict({k: v for k, v in g.to_dict().items() if k != 'name'}))
    assert not list(path.parent.glob('*.tmp'))


def _valid():
    return get_genotype('prdarts_99').to_dict()


@pytest.mark.parametrize('mutate, message', [
    (lambda d: d['normal'].__setitem__(0, ['conv_9x9', 0]), r"normal\[0\] uses unknown op 'conv_9x9'; known ops"),
    (lambda d: d['reduce'].__setitem__(3, ['sep_conv_3x3', 4]), r'reduce\[3\] reads input 4, but node 1 can only read inputs 0..2'),
    (lambda d: d['normal'].__setitem__(2, ['sep_conv_3x3', -1]), r'normal\[2\] reads input -1'),
    (lambda d: d['normal'].pop(), r"'normal' has 7 edges; .* must be even"),
    (lambda d: d.__setitem__('reduce', []), r"'reduce' must be a non-empty list"),
    (lambda d: d.__setitem__('normal_concat', [2, 3, 6]), r'normal_concat = \[2, 3, 6\] is invalid'),
    (lambda d: d.__setitem__('reduce_concat', [2, 2]), r'reduce_concat = \[2, 2\] is invalid'),
    (lambda d: d.__setitem__('normal_concat', 'all'), r"'normal_concat' must be a non-empty list"),
    (lambda d: d['normal'].__setitem__(1, ['none', 0]), r"normal\[1\] is 'none'"),
    (lambda d: d['normal'].__setitem__(1, 'skip_connect'), r'is not an \[op, input\] pair'),
    (lambda d: d.__setitem__('extra', 1), r"unknown keys \['extra'\]"),
    (lambda d: d.pop('reduce_concat'), r"missing keys \['reduce_concat'\]"),
])
def test_bad_genotypes_name_the_problem(mutate, message):
    data = _valid()
    mutate(data)
    with pytest.raises(GenotypeError, match=message):
        Genotype.from_dict(data)


def test_bad_files_name_the_file(tmp_path):
    missing = tmp_path / 'missing.json'
    with pytest.raises(GenotypeError, match='does not exist'):
        Genotype.load(missing)
    broken = tmp_path / 'broken.json'
    broken.write_text('{"normal": [')
    with pytest.raises(GenotypeError, match=r"broken.json' is not valid JSON"):
        Genotype.load(broken)
    bad_op = tmp_path / 'bad_op.json'
    data = _valid()
    data['reduce'][0] = ['conv_9x9', 1]
    bad_op.write_text(json.dumps(data))
    with pytest.raises(GenotypeError, match=r"bad_op.json'.*unknown op 'conv_9x9'"):
        get_genotype(bad_op)
    with pytest.raises(GenotypeError, match='unknown genotype .*not a shipped name'):
        get_genotype('prdarts_98')


def test_network_from_bad_genotype_file_is_a_clear_error(tmp_path):
    import timm
    path = tmp_path / 'g.json'
    data = _valid()
    data['normal'][5] = ['sep_conv_3x3', 9]
    path.write_text(json.dumps(data))
    with pytest.raises(GenotypeError, match=r'normal\[5\] reads input 9'):
        timm.create_model('prdarts_c10_mini', genotype=str(path))
